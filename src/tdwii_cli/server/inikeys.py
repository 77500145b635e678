"""The keys of `tdwii serve`'s INI file, each with its command-line twin: the one list that the
reader (`tdwii_cli.server.config`), `serve --help`'s epilog and the README's table come from.

The format is that of the `upsscp.py` worklist manager tdwii replaces: the server's
keys under `[DEFAULT]`; every other section is a move destination named by its AE
title, with `address` and `port` (tdwii serves no C-MOVE: they are checked, then
unused). Pure data, no imports beyond the standard library: `tdwii --help` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = [
    "IGNORED",
    "KEYS",
    "MOVE_DESTINATION_KEYS",
    "SERVER_SECTION",
    "IniKey",
    "epilog",
    "markdown_table",
]

Kind = Literal["int", "float", "bool", "path", "str", "list"]
SERVER_SECTION = "DEFAULT"
MOVE_DESTINATION_KEYS = ("address", "port")


@dataclass(frozen=True)
class IniKey:
    """One `[DEFAULT]` key: its name, value kind, command-line twin and what it sets."""

    name: str
    kind: Kind
    option: str
    meaning: str


KEYS: tuple[IniKey, ...] = (
    IniKey("ae_title", "str", "--ae-title / -aet", "our AE title (UPSSCP)"),
    IniKey("port", "int", "--port / -p", "listen port (2762 with TLS, else 11112)"),
    IniKey("bind_address", "str", "--bind-address / -ba", "listen address (all interfaces)"),
    IniKey("max_pdu", "int", "--max-pdu", "largest PDU we receive, 0 unlimited (16382)"),
    IniKey("acse_timeout", "float", "--acse-timeout / -ta", "seconds for the A-ASSOCIATE-RQ (30)"),
    IniKey("dimse_timeout", "float", "--dimse-timeout / -td", "seconds for each PDU begun (30)"),
    IniKey("network_timeout", "float", "--network-timeout / -tn", "idle seconds (60)"),
    IniKey("mutual_tls", "bool", "--mtls", "true: mutual TLS (false: plain, unless --tls)"),
    IniKey("ca_certificate", "path", "--ca", "CA the clients' certificates must chain to"),
    IniKey("certificate", "path", "--cert", "our certificate (PEM)"),
    IniKey("private_key", "path", "--key", "our private key (PEM)"),
    IniKey("database_location", "path", "--db", "workitem database (tdwii.sqlite)"),
    IniKey("ae_config", "path", "--ae-config", "known AEs (ApplicationEntities.json)"),
    IniKey("max_associations", "int", "--max-associations", "associations at once (10)"),
    IniKey(
        "max_associations_per_host",
        "int",
        "--max-associations-per-host",
        "per host (half of max_associations)",
    ),
    IniKey("max_pending", "int", "--max-pending", "connections not associated yet (512)"),
    IniKey("max_pending_per_host", "int", "--max-pending-per-host", "the same, per host (16)"),
    IniKey("max_message_size", "int", "--max-message-size", "longest request data set (4 MiB)"),
    IniKey(
        "require_called_aet",
        "bool",
        "--require-called-aet / --any-called-aet",
        "refuse another called AE title (false)",
    ),
    IniKey("handshake_timeout", "float", "--handshake-timeout", "seconds for a TLS handshake (10)"),
    IniKey("shutdown_grace", "float", "--shutdown-grace", "seconds to release at a stop (10)"),
    IniKey("log_summary", "float", "--log-summary", "repeated warnings counted, told every (10)"),
    IniKey("retention", "str", "--retention", "purge final workitems after (keep)"),
    IniKey(
        "authorize",
        "bool",
        "--authorize",
        "enforce the AE configuration's certificates and roles (false)",
    ),
    IniKey("audit", "list", "--audit", "audit trail destinations, space-separated (none)"),
    IniKey("audit_ca", "path", "--audit-ca", "CA of the audit repository (--ca)"),
    IniKey("audit_cert", "path", "--audit-cert", "our certificate towards it (--cert)"),
    IniKey("audit_key", "path", "--audit-key", "its private key (--key)"),
    IniKey("audit_spool", "path", "--audit-spool", "folder of audit messages not sent (DB.audit)"),
    IniKey("audit_spool_limit", "int", "--audit-spool-limit", "messages the spool holds (100000)"),
)

# upsscp.py keys tdwii reads and does not use, with the reason
IGNORED: dict[str, str] = {
    "instance_location": "upsscp.py's instance folder; tdwii keeps workitems in its database",
    "log_identifier": "upsscp.py's C-FIND identifier logging; tdwii's -v/-d decide",
}


def epilog() -> str:
    """The key table for `serve --help` (one paragraph per line, as typer prints them)."""
    width = max(len(k.name) for k in KEYS)
    lines = [
        "INI file (--config): the keys go under [DEFAULT]; other sections are upsscp.py move "
        "destinations (address, port), read and unused; an unknown key or section is refused. "
        "Each key and the option that overrides it:"
    ]
    lines += [f"{k.name:<{width}}  {k.option}: {k.meaning}" for k in KEYS]
    lines += [f"{name:<{width}}  (read, unused: {why})" for name, why in IGNORED.items()]
    return "\n\n".join(lines)


def markdown_table() -> str:
    """The same table in Markdown, as the README holds it."""
    rows = ["| INI key (`[DEFAULT]`) | command line | sets |", "|---|---|---|"]
    rows += [f"| `{k.name}` | `{k.option}` | {k.meaning} |" for k in KEYS]
    rows += [f"| `{name}` | (none) | read, unused: {why} |" for name, why in IGNORED.items()]
    return "\n".join(rows)
