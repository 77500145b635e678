"""`tdwii ups find`: the worklist query (UPS C-FIND), streamed into a table."""

from typing import Annotated, Literal

import typer

from tdwii_cli.cli.options.association import scu_options
from tdwii_cli.cli.options.log import LogOptions, log_options
from tdwii_cli.cli.options.tls import tls_options
from tdwii_cli.cli.ups.common import (
    Host,
    Json,
    Keys,
    Port,
    cancel_on_ctrl_c,
    interrupted,
    parse_keys,
    peer,
)
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.options import TlsOptions

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

    Matches are shown as they arrive. `--limit` or Ctrl-C sends C-CANCEL.
    """
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
    table = None
    if not json_out:
        from tdwii_cli.cli.ups.render import WorklistTable

        table = WorklistTable()
    completed = False
    try:
        with cancel_on_ctrl_c() as pressed:
            result = run_find(
                target,
                query,
                sop=sop,
                limit=limit,
                on_match=table.add if table is not None else None,
                interrupt=pressed,
            )
        completed = True
    finally:
        if table is not None:
            table.close(completed)
    if json_out:
        from tdwii_cli.cli.ups.render import dicom_json
        from tdwii_cli.dicom import codec

        print(dicom_json([codec.decode(m.data) for m in result.matches]))
    from tdwii_cli.cli.console import log as console_log

    more = f", {result.after_cancel} more after C-CANCEL" if result.after_cancel else ""
    console_log.info("%d match(es)%s in %.0f ms", len(result.matches), more, result.seconds * 1000)
    if result.interrupted:
        console_log.warning("interrupted: C-CANCEL sent after %d match(es)", len(result.matches))
        raise interrupted()
