"""`tdwii serve`: the UPS worklist manager (UPS SCP + Verification SCP), plain or over (m)TLS.

The command merges the INI file, the command line and the AE configuration, logs
the result at `-v`, and runs `tdwii_cli.server.manager.WorklistManager` until a
signal. (No `from __future__ import annotations` here: typer reads these
annotations at runtime.)
"""

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tdwii_cli.cli.listening import listen_error
from tdwii_cli.cli.options.log import LogOptions, log_options
from tdwii_cli.cli.options.tls import tls_option_values
from tdwii_cli.errors import TdwiiError
from tdwii_cli.server.inikeys import epilog

if TYPE_CHECKING:
    from tdwii_cli.access.aefile import KnownAE
    from tdwii_cli.server.config import ServeConfig
    from tdwii_cli.tls.options import TlsOptions

log = logging.getLogger("tdwii.serve")

NET = "Network"
LIMITS = "Limits"
SECURITY = "Authorization and audit"
EPILOG = epilog()  # the INI keys and their options, shown by `tdwii serve --help`


@log_options
@tls_option_values()
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
            help="ACSE timeout: the A-ASSOCIATE-RQ must arrive whole within it after the "
            "TLS handshake (ARTIM); default 30.",
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
            help="DIMSE timeout: each PDU must arrive whole within it once it has begun, "
            "and each response must be taken; default 30.",
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
            help="Network (idle) timeout: an association with no request for this long "
            "is aborted; default 60.",
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
            rich_help_panel=LIMITS,
        ),
    ] = None,
    max_associations_per_host: Annotated[
        int | None,
        typer.Option(
            "--max-associations-per-host",
            min=1,
            metavar="N",
            help="Associations one host (an IPv4 address, an IPv6 /64) may hold at once; "
            "default half of --max-associations. Behind a proxy, set it to the total.",
            rich_help_panel=LIMITS,
        ),
    ] = None,
    max_pending: Annotated[
        int | None,
        typer.Option(
            "--max-pending",
            min=1,
            metavar="N",
            help="Connections still in their TLS handshake or before their A-ASSOCIATE-RQ, "
            "in total; more are reset at once. Default 512.",
            rich_help_panel=LIMITS,
        ),
    ] = None,
    max_pending_per_host: Annotated[
        int | None,
        typer.Option(
            "--max-pending-per-host",
            min=1,
            metavar="N",
            help="The same, per host; default 16.",
            rich_help_panel=LIMITS,
        ),
    ] = None,
    max_message_size: Annotated[
        int | None,
        typer.Option(
            "--max-message-size",
            min=1,
            metavar="BYTES",
            help="Longest data set of one request; a longer one is discarded and refused "
            "(0213, C-FIND A700). Default 4194304 (4 MiB).",
            rich_help_panel=LIMITS,
        ),
    ] = None,
    require_called_aet: Annotated[
        bool | None,
        typer.Option(
            "--require-called-aet/--any-called-aet",
            help="Refuse an association addressed to another AE title than ours "
            "(A-ASSOCIATE-RJ, called AE title not recognised). Default: accept any, as "
            "DCMTK does: the title is the caller's to choose and proves nothing (the "
            "certificate does), and DCMTK and dcm4che clients address ANY-SCP by default.",
            rich_help_panel=NET,
            show_default=False,
        ),
    ] = None,
    log_summary: Annotated[
        float | None,
        typer.Option(
            "--log-summary",
            min=0,
            metavar="SECONDS",
            help="Warnings a flood repeats (failed handshakes, stalled or refused "
            "connections) are logged once per network (IPv4 /24, IPv6 /64) and then counted, "
            "one line per network every SECONDS; 0 logs each. -d logs each too. Default 10.",
            rich_help_panel=LIMITS,
        ),
    ] = None,
    shutdown_grace: Annotated[
        float | None,
        typer.Option(
            "--shutdown-grace",
            min=0,
            metavar="SECONDS",
            help="At a stop, running associations get this long to release; then they "
            "are aborted (A-ABORT). Default 10.",
            rich_help_panel=LIMITS,
        ),
    ] = None,
    handshake_timeout: Annotated[
        float | None,
        typer.Option(
            "--handshake-timeout",
            min=0.001,
            metavar="SECONDS",
            help="A TLS handshake must complete within this; default 10.",
            rich_help_panel=LIMITS,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            metavar="FILE",
            help="INI configuration, upsscp.py's format (its keys are listed below); "
            "options override it.",
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
    ready_file: Annotated[
        Path | None,
        typer.Option(
            "--ready-file",
            metavar="FILE",
            help="Once listening, write 'HOST PORT' to FILE (removed at exit): scripts wait "
            "for it instead of sleeping; or use tdwii echo --wait.",
        ),
    ] = None,
    authorize: Annotated[
        bool | None,
        typer.Option(
            "--authorize",
            help="Enforce the --ae-config: a calling AE title must be bound to the client's "
            "certificate (else A-ASSOCIATE-RJ) and each operation needs its role (else 0124, "
            "C-FIND C124). Needs --mtls. Run this in a clinic; without it any certificate "
            "from the CA may call as any AE title and do anything.",
            rich_help_panel=SECURITY,
            show_default=False,
        ),
    ] = None,
    audit: Annotated[
        list[str] | None,
        typer.Option(
            "--audit",
            metavar="DEST",
            help="Send DICOM audit messages (IHE ATNA, PS3.15 A.5) to DEST, repeatable: a "
            "FILE (one RFC 5424 message per line), syslog+tls://HOST[:6514] (RFC 5425, mutual "
            "TLS) or udp://HOST[:514] (RFC 5426). They wait in a spool on disk while a "
            "destination is down.",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    audit_ca: Annotated[
        Path | None,
        typer.Option(
            "--audit-ca",
            metavar="FILE",
            help="CA of the syslog+tls repository's certificate; default: --ca.",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    audit_cert: Annotated[
        Path | None,
        typer.Option(
            "--audit-cert",
            metavar="FILE",
            help="Our certificate towards the repository; default: --cert.",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    audit_key: Annotated[
        Path | None,
        typer.Option(
            "--audit-key",
            metavar="FILE",
            help="Its private key; default: --key.",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    audit_spool: Annotated[
        Path | None,
        typer.Option(
            "--audit-spool",
            metavar="FOLDER",
            help="The folder where audit messages wait for their destinations (0700, files "
            "0600); default: the database's path + .audit.",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    audit_spool_limit: Annotated[
        int | None,
        typer.Option(
            "--audit-spool-limit",
            min=1,
            metavar="N",
            help="Messages the spool may hold; past it audit messages are dropped, with an "
            "ERROR line and a Security Alert. Default 100000.",
            rich_help_panel=SECURITY,
        ),
    ] = None,
    *,
    log: LogOptions,
    tls: dict[str, Any],
) -> None:
    """Run the UPS worklist manager (UPS Push, Pull, Watch, Query, Event; C-ECHO) on SQLite.

    Stop it with Ctrl-C or SIGTERM: running associations get --shutdown-grace seconds to
    release, the rest are aborted, then it exits 0. Every read has a deadline: the
    TLS handshake (--handshake-timeout), the A-ASSOCIATE-RQ (-ta), each PDU once begun
    (-td), the next request (-tn). A P-DATA-TF over --max-pdu is aborted after its header.
    """
    command_line = {
        "port": port,
        "bind_address": bind_address,
        "ae_title": ae_title,
        "max_pdu": max_pdu,
        "acse_timeout": acse_timeout,
        "dimse_timeout": dimse_timeout,
        "network_timeout": network_timeout,
        "max_associations": max_associations,
        "max_associations_per_host": max_associations_per_host,
        "max_pending": max_pending,
        "max_pending_per_host": max_pending_per_host,
        "max_message_size": max_message_size,
        "require_called_aet": require_called_aet,
        "shutdown_grace": shutdown_grace,
        "log_summary": log_summary,
        "handshake_timeout": handshake_timeout,
        "database_location": db,
        "ae_config": ae_config,
        "retention": retention,
        "authorize": authorize,
        "audit": tuple(audit) if audit else None,
        "audit_ca": audit_ca,
        "audit_cert": audit_cert,
        "audit_key": audit_key,
        "audit_spool": audit_spool,
        "audit_spool_limit": audit_spool_limit,
    }
    code = run_serve(
        command_line,
        tls,
        config_file=config,
        quiet=log.level > logging.WARNING,
        ready_file=ready_file,
    )
    raise typer.Exit(code)


_TLS_KEYS = ("mutual_tls", "ca_certificate", "certificate", "private_key")


def run_serve(
    command_line: dict[str, Any],
    tls_values: dict[str, Any],
    *,
    config_file: Path | None = None,
    quiet: bool = False,
    ready_file: Path | None = None,
) -> int:
    """Merge the configuration, start the worklist manager, serve until a signal; exit code."""
    from tdwii_cli.audit.spool import SpoolError
    from tdwii_cli.cli.console import stderr_console
    from tdwii_cli.server import config as serveconfig
    from tdwii_cli.server.manager import WorklistManager
    from tdwii_cli.server.store import StoreError

    ini = serveconfig.read_ini(config_file) if config_file is not None else None
    config = serveconfig.effective_config(ini, command_line)
    tls = serveconfig.resolve_tls(config, tls_values, config_file)
    known = (
        serveconfig.load_application_entities(config.ae_config)
        if config.ae_config is not None
        else {}
    )
    manager = WorklistManager(config, tls, known)
    mode = tls.mode_words
    if log.isEnabledFor(logging.INFO):
        _log_config(config, tls, mode, manager.port, sorted(known), config_file)
        if known:
            _log_bindings(config, known)
    try:
        manager.start()
    except StoreError as exc:
        raise TdwiiError(str(exc), hint="check --db (a writable file path)") from None
    except SpoolError as exc:
        raise TdwiiError(str(exc), hint="check --audit-spool (a folder of its own)") from None
    except OSError as exc:
        raise listen_error(exc, config.bind_address, manager.port) from None
    except ValueError as exc:  # a bad address
        raise TdwiiError(f"cannot start: {exc}".splitlines()[0]) from None
    host, bound_port = manager.address
    if not quiet:
        shown = f"[{host}]" if ":" in host else host
        stderr_console().print(
            f"tdwii serve: {config.ae_title} listening on {shown}:{bound_port} ({mode}), "
            f"database {config.database_location}; Ctrl-C to stop",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    if ready_file is not None:
        try:
            _write_ready_file(ready_file, host, bound_port)
        except TdwiiError:
            manager.stop(0)
            raise
    try:
        code = manager.serve_until_signal()
    finally:
        if ready_file is not None:
            ready_file.unlink(missing_ok=True)
    log.info("stopped")
    return code


def _log_bindings(config: "ServeConfig", known: dict[str, "KnownAE"]) -> None:
    """At -v, the table of AE titles, bound certificate identities and roles: enforced with
    --authorize, informative without."""
    from rich.table import Table
    from rich.text import Text

    from tdwii_cli.access.policy import AccessPolicy
    from tdwii_cli.cli.console import stderr_console

    enforced = "enforced (--authorize)" if config.authorize else "not enforced (no --authorize)"
    table = Table()
    table.add_column("AE title", no_wrap=True)
    table.add_column("certificates bound")
    table.add_column("roles")
    table.add_column("event reports to", no_wrap=True)
    for row in AccessPolicy(known).bindings():
        entry = known[row.ae_title]
        address = f"{entry.address}:{entry.port}" if entry.reachable else "-"
        if entry.reachable and entry.mtls:
            address += " (mTLS)"
        cells = (row.ae_title, "\n".join(row.identities) or "(none)", row.roles, address)
        table.add_row(*(Text(cell) for cell in cells))
    console = stderr_console()
    console.print(Text(f"AE titles, certificates and roles: {enforced}"), soft_wrap=True)
    console.print(table)


def _write_ready_file(path: Path, host: str, port: int) -> None:
    """'HOST PORT' (the address listened on), written atomically once we accept."""
    from tdwii_cli.fileio import write_atomic

    try:
        write_atomic(path, f"{host} {port}\n".encode())
    except OSError as exc:
        raise TdwiiError(f"cannot write the ready file {path}: {exc.strerror or exc}") from None


def _log_config(
    config: "ServeConfig",
    tls: "TlsOptions",
    mode: str,
    port: int,
    known: list[str],
    config_file: Path | None,
) -> None:
    """The effective configuration at -v, TLS once as used."""
    log.info("effective configuration%s:", f" ({config_file})" if config_file else "")
    for key, value, source in config.rows():
        if key in _TLS_KEYS:  # the effective TLS lines below say what is used
            continue
        if key == "port":
            value = str(port)
        log.info("  %-18s %-40s (%s)", key, value, source)
    log.info("  %-18s %s, profile %s", "tls", mode, tls.profile)
    if config.audit:
        log.info("  %-18s %s", "audit spool", config.effective_audit_spool)
    if tls.enabled:
        log.info("  %-18s %s", "ca", ", ".join(str(p) for p in tls.ca))
        log.info("  %-18s %s", "certificate", tls.cert)
        log.info("  %-18s %s", "private key", tls.key)
    if known:
        log.info("  %-18s %s", "known AEs", ", ".join(known))
