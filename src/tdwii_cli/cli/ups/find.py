"""`tdwii ups find`: the worklist query (UPS C-FIND), streamed as a table, lines or JSON."""

from typing import TYPE_CHECKING, Annotated, Literal

import typer

from tdwii_cli.cli.options.association import scu_options
from tdwii_cli.cli.options.log import LogOptions, log_options
from tdwii_cli.cli.options.tls import tls_options
from tdwii_cli.cli.ups.common import Host, Json, Keys, Port, parse_keys, peer
from tdwii_cli.errors import Interrupted
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.options import TlsOptions

if TYPE_CHECKING:
    from tdwii_cli.client.find import FindResult

MATCH = "Matching"


@log_options
@tls_options("client")
@scu_options
def find(
    host: Host,
    port: Port,
    station: Annotated[
        str,
        typer.Option(
            "--station", metavar="CODE", help="Scheduled station name code.", rich_help_panel=MATCH
        ),
    ] = "",
    state: Annotated[
        str,
        typer.Option(
            "--state", help="SCHEDULED, IN PROGRESS, COMPLETED or CANCELED.", rich_help_panel=MATCH
        ),
    ] = "",
    day: Annotated[
        str,
        typer.Option(
            "--date",
            metavar="DAY",
            help="Scheduled on this day (2026-03-10, today).",
            rich_help_panel=MATCH,
        ),
    ] = "",
    start: Annotated[
        str,
        typer.Option(
            "--from", metavar="WHEN", help="Scheduled at or after.", rich_help_panel=MATCH
        ),
    ] = "",
    end: Annotated[
        str,
        typer.Option("--to", metavar="WHEN", help="Scheduled at or before.", rich_help_panel=MATCH),
    ] = "",
    patient_id: Annotated[
        str, typer.Option("--patient-id", metavar="ID", help="Patient ID.", rich_help_panel=MATCH)
    ] = "",
    label: Annotated[
        str,
        typer.Option(
            "--label",
            metavar="TEXT",
            help="Procedure Step Label (* and ? match).",
            rich_help_panel=MATCH,
        ),
    ] = "",
    keys: Keys = None,
    sop: Annotated[
        Literal["pull", "watch", "query"],
        typer.Option("--sop", help="The UPS SOP Class to query with."),
    ] = "pull",
    limit: Annotated[
        int, typer.Option("--limit", min=0, metavar="N", help="Stop after N matches (C-CANCEL).")
    ] = 0,
    json_out: Json = False,
    *,
    log: LogOptions,
    tls: TlsOptions,
    net: ScuOptions,
) -> None:
    """Query a worklist (UPS C-FIND), e.g. a treatment machine's: `--station TB1 --date today`.

    Matches are shown as they arrive: a table on a terminal (at most 1,000 rows, then
    C-CANCEL), lines when piped, or --json; both stream any number. `--limit` or Ctrl-C
    sends C-CANCEL.
    """
    from tdwii_cli.cli.interrupts import cancel_on_ctrl_c
    from tdwii_cli.cli.ups.matches import output
    from tdwii_cli.client.find import find as run_find
    from tdwii_cli.ups.worklist import WorklistQuery, parse_when

    query = WorklistQuery(
        station=station,
        state=state,
        day=parse_when(day, "--date") if day else "",
        start=parse_when(start, "--from") if start else "",
        end=parse_when(end, "--to", end=True) if end else "",
        patient_id=patient_id,
        label=label,
        keys=parse_keys(keys),
    )
    target = peer(host, port, tls, net)
    shown = output(json_out)
    if shown.bound and not 0 < limit <= shown.bound:
        limit = shown.bound + 1  # one more than it shows: so we know there were more
    completed = False
    try:
        with cancel_on_ctrl_c() as pressed:
            result = run_find(
                target, query, sop=sop, limit=limit, on_match=shown.add, interrupt=pressed
            )
        completed = True
    finally:
        shown.close(completed)
    _summary(result, shown.shown)
    if shown.bound and result.count > shown.bound:
        from tdwii_cli.cli.console import log as console_log

        console_log.warning(
            "more than %s matches: the table shows the first %s (C-CANCEL sent); --json, or "
            "the output piped, streams them all; --limit N or a narrower query shows fewer",
            f"{shown.bound:,}",
            f"{shown.bound:,}",
        )


def _summary(result: "FindResult", shown: int) -> None:
    """The count at -v; after Ctrl-C, the one line of the interruption (exit 130)."""
    from tdwii_cli.cli.console import log as console_log

    more = f", {result.after_cancel} more after C-CANCEL" if result.after_cancel else ""
    console_log.info("%d match(es)%s in %.0f ms", result.count, more, result.seconds * 1000)
    if result.interrupted:
        words = f"interrupted (Ctrl-C) after {shown:,} match(es) shown"
        if result.cancelled:
            words += "; C-CANCEL sent"
        words += "; association aborted" if result.aborted else "; the peer ended the query"
        raise Interrupted(words)
