"""`tdwii serve`: the UPS worklist manager (UPS SCP + Verification SCP), plain or over (m)TLS.

(No `from __future__ import annotations` here: typer reads these annotations at runtime.)
"""

from pathlib import Path
from typing import Annotated, Any

import typer

from tdwii_cli.logoptions import LogOptions, log_options
from tdwii_cli.tlsoptions import tls_option_values

NET = "Network"


@log_options
@tls_option_values("server")
def serve(
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            "-p",
            min=0,
            max=65535,
            help="Port to listen on; default 2762 with --mtls/--tls, else 11112.",
            rich_help_panel=NET,
        ),
    ] = None,
    bind_address: Annotated[
        str | None,
        typer.Option(
            "--bind-address",
            "-ba",
            metavar="ADDRESS",
            help="Address to listen on; default all interfaces, IPv4 and IPv6.",
            rich_help_panel=NET,
        ),
    ] = None,
    ae_title: Annotated[
        str | None,
        typer.Option(
            "--ae-title", "-aet", help="Our AE title; default UPSSCP.", rich_help_panel=NET
        ),
    ] = None,
    max_pdu: Annotated[
        int | None,
        typer.Option(
            "--max-pdu",
            min=0,
            help="Maximum PDU size we receive, 0 unlimited; default 16382.",
            rich_help_panel=NET,
        ),
    ] = None,
    acse_timeout: Annotated[
        float | None,
        typer.Option(
            "--acse-timeout",
            "-ta",
            min=0.001,
            metavar="SECONDS",
            help="ACSE timeout; default 30.",
            rich_help_panel=NET,
        ),
    ] = None,
    dimse_timeout: Annotated[
        float | None,
        typer.Option(
            "--dimse-timeout",
            "-td",
            min=0.001,
            metavar="SECONDS",
            help="DIMSE timeout; default 30.",
            rich_help_panel=NET,
        ),
    ] = None,
    network_timeout: Annotated[
        float | None,
        typer.Option(
            "--network-timeout",
            "-tn",
            min=0.001,
            metavar="SECONDS",
            help="Network (idle) timeout; default 60.",
            rich_help_panel=NET,
        ),
    ] = None,
    max_associations: Annotated[
        int | None,
        typer.Option(
            "--max-associations",
            min=1,
            metavar="N",
            help="More at once are rejected (A-ASSOCIATE-RJ); default 10.",
            rich_help_panel=NET,
        ),
    ] = None,
    handshake_timeout: Annotated[
        float | None,
        typer.Option(
            "--handshake-timeout",
            min=0.001,
            metavar="SECONDS",
            help="A TLS handshake must complete within this; default 10.",
            rich_help_panel=NET,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            metavar="FILE",
            help="INI configuration (the seed's keys); options override it.",
        ),
    ] = None,
    db: Annotated[
        Path | None,
        typer.Option("--db", metavar="FILE", help="Workitem database; default ./tdwii.sqlite."),
    ] = None,
    ae_config: Annotated[
        Path | None,
        typer.Option(
            "--ae-config",
            metavar="FILE",
            help="Known application entities (ApplicationEntities.json).",
        ),
    ] = None,
    retention: Annotated[
        str | None,
        typer.Option(
            "--retention",
            metavar="DURATION",
            help="Purge COMPLETED/CANCELED workitems after this long (e.g. 30d, 12h, 90s) "
            "unless a subscriber holds a deletion lock; default: keep them.",
        ),
    ] = None,
    *,
    log: LogOptions,
    tls: dict[str, Any],
) -> None:
    """Run the UPS worklist manager (UPS Push, Pull, Watch, Query, Event; C-ECHO) on SQLite.

    Stop it with Ctrl-C or SIGTERM: running associations finish, then it exits 0.
    """
    from tdwii_cli.server import run_serve

    command_line = {
        "port": port,
        "bind_address": bind_address,
        "ae_title": ae_title,
        "max_pdu": max_pdu,
        "acse_timeout": acse_timeout,
        "dimse_timeout": dimse_timeout,
        "network_timeout": network_timeout,
        "max_associations": max_associations,
        "handshake_timeout": handshake_timeout,
        "database_location": db,
        "ae_config": ae_config,
        "retention": retention,
    }
    code = run_serve(command_line, tls, config_file=config, log_options=log)
    raise typer.Exit(code)
