"""`tdwii echo`: Verification SCU (C-ECHO), the first test of a DICOM TLS set-up."""

from __future__ import annotations

from typing import Annotated

import typer

from tdwii_cli import exitcodes
from tdwii_cli.cli.options.association import scu_options
from tdwii_cli.cli.options.log import LogOptions, log_options
from tdwii_cli.cli.options.tls import tls_options
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.options import TlsOptions


@log_options
@tls_options("client")
@scu_options
def echo(
    host: Annotated[str, typer.Argument(help="The peer's host name or address.")],
    port: Annotated[int, typer.Argument(help="Its port (2762 for DICOM TLS).", min=1, max=65535)],
    count: Annotated[int, typer.Option("--count", min=1, help="C-ECHOs per association.")] = 1,
    repeat: Annotated[
        int, typer.Option("--repeat", "-r", min=1, help="Associations, one after the other.")
    ] = 1,
    wait: Annotated[
        float,
        typer.Option(
            "--wait",
            min=0,
            metavar="SECONDS",
            help="Retry while the peer is not listening yet, up to SECONDS (a server just "
            "started).",
        ),
    ] = 0.0,
    *,
    net: ScuOptions,
    tls: TlsOptions,
    log: LogOptions,
) -> None:
    """Send C-ECHO to a DICOM node: `tdwii echo --mtls localhost 2762`."""
    from tdwii_cli.client.echo import run_echo
    from tdwii_cli.dicom.status import format_status

    result = run_echo(host, port, tls=tls, net=net, count=count, repeat=repeat, wait=wait)
    times = result.summary()
    status = result.statuses[-1]
    where = f"{net.called_aet}@{result.peer}"
    secure = f" over {result.tls_version} {result.cipher}" if result.tls_version else ""
    line = (
        f"C-ECHO {where}{secure}: {len(result.statuses)} sent, status "
        f"{format_status(status, 'C-ECHO')}, rtt ms min {times['min']:.1f} median "
        f"{times['median']:.1f} max {times['max']:.1f}"
    )
    typer.echo(line)
    if not result.ok:
        raise typer.Exit(exitcodes.DIMSE_FAILURE)
