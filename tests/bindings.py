"""The AE configuration the authorization and audit tests run with: client certificates issued
into a test PKI and bound to AE titles with roles (AE title: certificates -> roles):
TMS: workitemcreator -> create, query. TDD1: tdd1, tdd1b -> perform, query, watch (event
reports to the given port). TDD2 and TDD2B: tdd2 -> perform. CANCELLER: canceller -> cancel.
ADMIN: admin -> admin. READER: reader -> query. WATCHER: none (the old format: an address)."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import PKI_CLIENT
from tdwii_cli.access import aefile
from tdwii_cli.pki.authority import issue_node

BINDINGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "TMS": (("workitemcreator",), ("create", "query")),
    "TDD1": (("tdd1", "tdd1b"), ("perform", "query", "watch")),
    "TDD2": (("tdd2",), ("perform",)),
    "TDD2B": (("tdd2",), ("perform",)),
    "CANCELLER": (("canceller",), ("cancel",)),
    "ADMIN": (("admin",), ("admin",)),
    "READER": (("reader",), ("query",)),
}


def client(name: str) -> str:
    """The PKI path (without suffix) of client node `name`."""
    return PKI_CLIENT if name == "workitemcreator" else f"clients/{name}/{name}"


def write_bindings(certs: Path, ae_config: Path, event_port: int) -> None:
    for name in ("tdd1", "tdd1b", "tdd2", "canceller", "admin", "reader"):
        issue_node(certs, "client", name)
    ae_config.write_text(
        json.dumps([{"AETitle": "WATCHER", "IPAddr": "127.0.0.1", "Port": event_port}])
    )
    for title, (names, roles) in BINDINGS.items():
        for name in names:
            reports = ("127.0.0.1", event_port) if title == "TDD1" else (None, None)
            aefile.update_entry(
                ae_config,
                title,
                f"CN={name}",
                frozenset(roles),
                address=reports[0],
                port=reports[1],
            )
