"""`tdwii create-workitem`: the Workitem Creator (UPS Push SCU), thin layer over
`tdwii_cli.client.create`.

pydicom and pynetdicom are imported inside the command only, so `tdwii --help` stays light.
(No `from __future__ import annotations` here: typer reads these annotations at runtime.)
"""

import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from tdwii_cli import exitcodes
from tdwii_cli.cli.options.association import PANEL as NET
from tdwii_cli.cli.options.association import scu_options
from tdwii_cli.cli.options.log import LogOptions, log_options
from tdwii_cli.cli.options.tls import tls_options
from tdwii_cli.errors import TdwiiError
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.options import TlsOptions

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator

    from pydicom.dataset import Dataset

    from tdwii_cli.client.create import Outcome, Peer

BUILD = "Build one workitem (when no PATH is given)"

PROGRESS_MIN = 5  # show a progress bar for more workitems than this


def parse_scheduled(text: str) -> datetime:
    """`now`, ISO 8601 (`2025-03-10T08:00`, `2025-03-10 08:00`) or a DICOM DT."""
    text = text.strip()
    if text.lower() == "now":
        return datetime.now().replace(microsecond=0)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        pass
    for fmt in ("%Y%m%d%H%M%S", "%Y%m%d%H%M", "%Y%m%d"):
        try:
            return datetime.strptime(text, fmt)
        except ValueError:
            continue
    raise TdwiiError(
        f"--scheduled {text!r} is not a date and time",
        exitcodes.USAGE,
        hint="use e.g. 2025-03-10T08:00, 20250310080000 or now",
    )


@log_options
@tls_options("client")
@scu_options
def create_workitem(
    host: Annotated[
        str | None,
        typer.Argument(
            help="The worklist manager's host name or address (not with --dry-run or --save)."
        ),
    ] = None,
    port: Annotated[
        str | None, typer.Argument(metavar="[PORT]", help="Its port (2762 for DICOM TLS).")
    ] = None,
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            metavar="[PATH]...",
            help="DICOM files holding UPS instances, or folders (walked recursively).",
        ),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option(
            "--batch-size",
            min=0,
            metavar="N",
            help="Reconnect every N workitems (0: all over one association).",
            rich_help_panel=NET,
        ),
    ] = 0,
    new_uid: Annotated[
        bool,
        typer.Option("--new-uid", help="Give each workitem a fresh SOP Instance UID."),
    ] = False,
    no_check: Annotated[
        bool,
        typer.Option("--no-check", help="Send without the local check (let the server judge)."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Read and check, send nothing.")
    ] = False,
    json_out: Annotated[
        bool, typer.Option("--json", help="Results as JSON on stdout (for machines).")
    ] = False,
    patient_id: Annotated[
        str | None, typer.Option("--patient-id", help="Patient ID.", rich_help_panel=BUILD)
    ] = None,
    patient_name: Annotated[
        str,
        typer.Option(
            "--patient-name", help="Patient's Name (Family^Given).", rich_help_panel=BUILD
        ),
    ] = "",
    label: Annotated[
        str,
        typer.Option("--label", help="Procedure Step Label.", rich_help_panel=BUILD),
    ] = "RT Treatment",
    worklist_label: Annotated[
        str | None,
        typer.Option("--worklist-label", help="Worklist Label.", rich_help_panel=BUILD),
    ] = None,
    scheduled: Annotated[
        str,
        typer.Option(
            "--scheduled",
            metavar="WHEN",
            help="Scheduled start: 2025-03-10T08:00, 20250310080000 or now.",
            rich_help_panel=BUILD,
        ),
    ] = "now",
    priority: Annotated[
        Literal["HIGH", "MEDIUM", "LOW"],
        typer.Option("--priority", case_sensitive=False, rich_help_panel=BUILD),
    ] = "MEDIUM",
    station: Annotated[
        str | None,
        typer.Option(
            "--station",
            metavar="NAME",
            help="Scheduled station (treatment machine) name code, e.g. TrueBeam1.",
            rich_help_panel=BUILD,
        ),
    ] = None,
    plan_uid: Annotated[
        str | None,
        typer.Option(
            "--plan-uid",
            metavar="UID",
            help="RT Plan SOP Instance UID referenced in the Input Information Sequence.",
            rich_help_panel=BUILD,
        ),
    ] = None,
    workitem_code: Annotated[
        str,
        typer.Option(
            "--workitem-code",
            metavar="VALUE^SCHEME^MEANING",
            help="Scheduled Workitem Code.",
            rich_help_panel=BUILD,
        ),
    ] = "121726^DCM^RT Treatment with Internal Verification",
    save: Annotated[
        Path | None,
        typer.Option(
            "--save",
            metavar="FILE",
            help="Write the built workitem to FILE (Part 10) instead of sending it.",
            rich_help_panel=BUILD,
        ),
    ] = None,
    *,
    log: LogOptions,
    tls: TlsOptions,
    net: ScuOptions,
) -> None:
    """Send UPS workitems to a worklist manager (N-CREATE), or build one from options.

    All workitems go over one association. Each is checked locally first
    (state SCHEDULED, Type 1 attributes, no Transaction UID); a file with
    problems is reported, one line per problem, and not sent.

    Exit 0 when every workitem was created; 3 when some were and some were not;
    64 when the server refused them all; 1 when nothing could be sent.
    """
    from tdwii_cli.client import create as creator

    started = time.perf_counter()
    build_opts = patient_id is not None
    sending = save is None and not dry_run
    host, port_number, paths = _positionals(host, port, list(paths or []), sending)
    if paths and (build_opts or save is not None):
        raise TdwiiError(
            "PATHs and --patient-id/--save exclude each other",
            exitcodes.USAGE,
            hint="send files, or build one workitem from options",
        )
    if save is not None and not build_opts:
        raise TdwiiError(
            "--save needs a workitem to build",
            exitcodes.USAGE,
            hint="add --patient-id (and --label, --station, ...)",
        )

    pending: Iterable[Outcome]
    if build_opts:
        built = creator.prepare_datasets(
            [
                (
                    "(options)",
                    _build(
                        patient_id or "",
                        patient_name,
                        label,
                        worklist_label,
                        scheduled,
                        priority,
                        station,
                        plan_uid,
                        workitem_code,
                    ),
                )
            ],
            check=not no_check,
        )
        total = len(built)
        if save is not None:
            from tdwii_cli.client.dicomfiles import write_part10

            outcome = built[0]
            assert outcome.dataset is not None
            write_part10(outcome.dataset, save)
            outcome.source = str(save)
            if outcome.kind == creator.READY:
                outcome.kind = creator.SAVED
                outcome.detail = "written, not sent"
        pending = built
    elif paths:
        files = _files(paths)  # listed first: the progress bar's total
        pending = creator.prepare_iter(files, new_uid=new_uid, check=not no_check)
        total = len(files)
    else:
        raise TdwiiError(
            "nothing to send",
            exitcodes.USAGE,
            hint="give DICOM files or folders, or build one with --patient-id",
        )

    associations = 0
    interrupted: TdwiiError | None = None
    outcomes: list[Outcome] = []
    if sending:
        peer = creator.Peer(
            host=host or "",
            port=port_number or 0,
            tls=tls,
            net=net,
        )
        try:
            associations = _send(
                _collect(pending, outcomes), total, peer, batch_size, show_progress=not json_out
            )
        except creator.SendInterrupted as exc:
            interrupted = exc
            associations = exc.associations
    else:
        outcomes = list(pending)
        for outcome in outcomes:
            if dry_run and outcome.kind == creator.READY:
                outcome.kind = creator.DRY_RUN
                outcome.detail = "checked, not sent (--dry-run)"
    _report_local(outcomes)
    elapsed = time.perf_counter() - started
    code = creator.exit_code(outcomes)
    if interrupted is not None:
        code = interrupted.exit_code
    if json_out:
        _render_json(outcomes, associations, elapsed, code)
    else:
        _render_table(outcomes, associations, elapsed)
    if interrupted is not None:
        raise interrupted
    if code:
        raise typer.Exit(code)


def _positionals(
    host: str | None, port: str | None, paths: "list[Path]", sending: bool
) -> "tuple[str | None, int | None, list[Path]]":
    """HOST, PORT and the PATHs. Sending needs HOST and PORT; --dry-run and --save do not, so
    there every word is a path, unless the first two read as HOST PORT (a send command line
    with --dry-run added: then they are not used)."""
    hint = "HOST and PORT come before the paths: tdwii create-workitem HOST PORT PATH..."
    words = [w for w in (host, port) if w is not None]
    looks_like_port = port is not None and port.isdigit() and 1 <= int(port) <= 65535
    if not sending:
        if host is not None and looks_like_port and not Path(host).exists():
            return host, int(port or 0), paths
        return None, None, [Path(w) for w in words] + paths
    if host is None or port is None:
        raise TdwiiError(
            "HOST and PORT are required to send" if host is None else "PORT missing",
            exitcodes.USAGE,
            hint=hint
            if host is not None
            else "e.g. tdwii create-workitem --mtls localhost 2762 "
            "FILE (or --dry-run FILE to check without sending)",
        )
    if not looks_like_port:
        raise TdwiiError(f"PORT {port!r} is not a TCP port (1-65535)", exitcodes.USAGE, hint=hint)
    return host, int(port), paths


def _files(paths: "list[Path]") -> "list[Path]":
    """The files to read under `paths`; those in a folder that are plainly not DICOM are
    passed over (listed at -v), and none left is an error."""
    from tdwii_cli.cli.console import log
    from tdwii_cli.client.dicomfiles import list_files

    files, passed = list_files(paths)
    for skipped in passed:
        log.info("%s: passed over, %s (found in a folder)", skipped.path, skipped.reason)
    if not files:
        raise TdwiiError(
            "no DICOM files under " + ", ".join(str(p) for p in paths),
            hint=f"{len(passed)} file(s) there are not DICOM (listed at -v)",
        )
    return files


def _build(
    patient_id: str,
    patient_name: str,
    label: str,
    worklist_label: str | None,
    scheduled: str,
    priority: str,
    station: str | None,
    plan_uid: str | None,
    workitem_code: str,
) -> "Dataset":
    from tdwii_cli.ups.workitem import build_workitem, parse_code

    try:
        code = parse_code(workitem_code)
    except ValueError as exc:
        raise TdwiiError(
            str(exc),
            exitcodes.USAGE,
            hint='e.g. --workitem-code "121726^DCM^RT Treatment with Internal Verification"',
        ) from None
    return build_workitem(
        patient_id=patient_id,
        patient_name=patient_name,
        label=label,
        worklist_label=worklist_label,
        scheduled=parse_scheduled(scheduled),
        priority=priority.upper(),
        station=station,
        plan_uid=plan_uid,
        workitem_code=code,
    )


def _report_local(outcomes: "list[Outcome]") -> None:
    """One error line per local problem and per unusable file."""
    from tdwii_cli.cli.console import log
    from tdwii_cli.client import create as creator

    for outcome in outcomes:
        if outcome.kind == creator.NOT_DICOM:
            log.error("%s: skipped, %s", outcome.source, outcome.detail)
        elif outcome.kind == creator.REFUSED:
            for problem in outcome.problems:
                log.error("%s: not sent, %04X %s", outcome.source, problem.status, problem.message)


def _collect(outcomes: "Iterable[Outcome]", into: "list[Outcome]") -> "Iterator[Outcome]":
    """`outcomes`, each appended to `into` as it is produced (the table keeps file order)."""
    for outcome in outcomes:
        into.append(outcome)
        yield outcome


def _send(
    outcomes: "Iterable[Outcome]", todo: int, peer: "Peer", batch_size: int, show_progress: bool
) -> int:
    """`creator.send`, with a progress bar over the files on a terminal."""
    from tdwii_cli.cli.console import stderr_console
    from tdwii_cli.client import create as creator

    if not show_progress or todo <= PROGRESS_MIN or not sys.stderr.isatty():
        return creator.send(outcomes, peer, batch_size=batch_size)
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("N-CREATE"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=stderr_console(),
        transient=True,
    ) as progress:
        task = progress.add_task("send", total=todo)
        return creator.send(
            outcomes, peer, batch_size=batch_size, on_done=lambda _o: progress.advance(task)
        )


def _status_cell(outcome: "Outcome") -> str:
    if outcome.status is None:
        return "-"
    return f"0x{outcome.status:04X}"


def _render_table(outcomes: "list[Outcome]", associations: int, elapsed: float) -> None:
    from rich.markup import escape
    from rich.table import Table

    from tdwii_cli.cli.console import stdout_console
    from tdwii_cli.client import create as creator
    from tdwii_cli.text import one_line

    colour = {
        creator.CREATED: "green",
        creator.FAILED: "red",
        creator.REFUSED: "red",
        creator.NOT_DICOM: "yellow",
        creator.NOT_SENT: "yellow",
        creator.DRY_RUN: "cyan",
        creator.SAVED: "cyan",
    }
    table = Table(title=None, show_lines=False)
    table.add_column("file", overflow="fold")
    table.add_column("SOP Instance UID", overflow="fold")
    table.add_column("status")
    table.add_column("result", overflow="fold")
    for o in outcomes:
        style = colour.get(o.kind, "")
        words = o.detail if o.kind in (creator.CREATED, creator.FAILED) else f"{o.kind}: {o.detail}"
        words = escape(one_line(words))
        table.add_row(
            escape(one_line(o.source)),
            escape(one_line(o.sop_instance_uid or "-")),  # the SCP may assign it
            _status_cell(o),
            f"[{style}]{words}[/]" if style else words,
        )
    console = stdout_console()
    console.print(table)
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.kind] = counts.get(o.kind, 0) + 1
    summary = ", ".join(f"{n} {kind}" for kind, n in counts.items())
    assoc_text = (
        f" over {associations} association{'s' if associations != 1 else ''}"
        if associations
        else ""
    )
    console.print(f"{summary}{assoc_text} in {elapsed:.2f} s")


def _render_json(outcomes: "list[Outcome]", associations: int, elapsed: float, code: int) -> None:
    from tdwii_cli.client import create as creator

    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.kind] = counts.get(o.kind, 0) + 1
    doc = {
        "results": [o.to_json() for o in outcomes],
        "created": counts.get(creator.CREATED, 0),
        "counts": counts,
        "associations": associations,
        "seconds": round(elapsed, 3),
        "exit_code": code,
    }
    import json

    sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    sys.stdout.flush()
