"""`tdwii ups deliver`: a scripted treatment delivery device, the whole TDW-II loop."""

from typing import Annotated

import typer

from tdwii_cli import exitcodes
from tdwii_cli.cli.options.association import scu_options
from tdwii_cli.cli.options.log import LogOptions, log_options
from tdwii_cli.cli.options.tls import tls_options
from tdwii_cli.cli.ups.common import Host, Port, TransactionsPath, peer, transaction_file
from tdwii_cli.errors import Interrupted, TdwiiError
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.options import TlsOptions


@log_options
@tls_options("client")
@scu_options
def deliver(
    host: Host,
    port: Port,
    station: Annotated[
        str, typer.Option("--station", metavar="CODE", help="Our treatment machine's code.")
    ],
    beams: Annotated[
        int, typer.Option("--beams", min=1, metavar="N", help="Beams to deliver.")
    ] = 2,
    pace: Annotated[
        float, typer.Option("--pace", min=0, metavar="S", help="Seconds per beam.")
    ] = 0.0,
    cancel_at: Annotated[
        int, typer.Option("--cancel-at", min=0, metavar="K", help="Cancel at beam K (0: never).")
    ] = 0,
    every: Annotated[
        bool, typer.Option("--all", help="Every READY workitem, not only the first.")
    ] = False,
    transactions: TransactionsPath = None,
    *,
    log: LogOptions,
    tls: TlsOptions,
    net: ScuOptions,
) -> None:
    """Act as a treatment delivery device: query (RO-58), claim (RO-60), one progress
    update per beam (RO-62), final update (RO-64) and COMPLETED or CANCELED (RO-65)."""
    from tdwii_cli.cli.ups.render import print_line
    from tdwii_cli.client.deliver import Step
    from tdwii_cli.client.deliver import deliver as run
    from tdwii_cli.client.statuses import describe

    def show(step: Step) -> None:
        status = f"  [{describe(step.status)}]" if step.status is not None else ""
        uid = f"  {step.uid}" if step.uid else ""
        print_line(f"{step.seconds * 1000:8.1f} ms{uid}  {step.what}{status}")

    store = transaction_file(transactions)
    try:
        done = run(
            peer(host, port, tls, net),
            station,
            beams=beams,
            pace=pace,
            cancel_at=cancel_at,
            every=every,
            transactions=store,
            on_step=show,
        )
    except Interrupted:
        raise TdwiiError(
            f"interrupted: a workitem claimed here stays IN PROGRESS, its Transaction UID "
            f"in {store.path}",
            exitcodes.INTERRUPTED,
            hint="tdwii ups cancel (or complete) ends it",
        ) from None
    for delivery in done:
        print_line(f"{delivery.uid}: {delivery.final_state}")
