"""The PKI folder's layout: where the CA and each node keep their files.

DIR/rootCA/rootCA.pem, rootCA.key, rootCA.p12 (Java trust store), rootCA.crl.pem,
    rootCA.revoked.json (the revoked serials)
DIR/servers/NAME/NAME.pem, .key, .p12 (Java key store)
DIR/clients/NAME/NAME.pem, .key, .p12
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tdwii_cli.errors import TdwiiError

NodeKind = Literal["server", "client"]
DEFAULT_SERVER = "worklistmanager"
DEFAULT_CLIENT = "workitemcreator"
CA_NAME = "rootCA"
KIND_FOLDER = {"server": "servers", "client": "clients"}
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass(frozen=True)
class NodePaths:
    """The files of one node (or of the CA): certificate, key, PKCS#12 store."""

    name: str
    folder: Path

    @property
    def cert(self) -> Path:
        return self.folder / f"{self.name}.pem"

    @property
    def key(self) -> Path:
        return self.folder / f"{self.name}.key"

    @property
    def p12(self) -> Path:
        return self.folder / f"{self.name}.p12"


@dataclass(frozen=True)
class CaPaths(NodePaths):
    """The CA's files, plus its CRL and the revocation state."""

    @property
    def crl(self) -> Path:
        return self.folder / f"{self.name}.crl.pem"

    @property
    def state(self) -> Path:
        return self.folder / f"{self.name}.revoked.json"


def ca_paths(directory: Path | str) -> CaPaths:
    """`DIR/rootCA/rootCA.{pem,key,p12,crl.pem}`."""
    return CaPaths(CA_NAME, Path(directory) / CA_NAME)


def node_paths(directory: Path | str, kind: NodeKind, name: str) -> NodePaths:
    """`DIR/servers/NAME/NAME.{pem,key,p12}` or `DIR/clients/NAME/...`."""
    if kind not in KIND_FOLDER:
        raise TdwiiError(f"unknown node kind {kind!r}", hint="use server or client")
    check_node_name(name)
    return NodePaths(name, Path(directory) / KIND_FOLDER[kind] / name)


def check_node_name(name: str) -> None:
    """Node names become folder and file names: letters, digits, `.`, `_`, `-`."""
    if not _NODE_NAME.match(name) or name in (".", "..") or name == CA_NAME:
        raise TdwiiError(
            f"{name!r} is not a usable node name",
            hint="use letters, digits, '.', '_' or '-' (up to 64), not starting with a dot",
        )
