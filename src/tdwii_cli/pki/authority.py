"""Operations on a PKI folder: make it, issue nodes, revoke them, reissue the CRL.

Private keys are PEM PKCS#8 files created 0600; certificates, CRL and the trust
store 0644; leaf key stores 0600. Every write is atomic (`tdwii_cli.fileio`), and
an operation that writes several files stages them all before the first rename.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from tdwii_cli.clock import utc_now
from tdwii_cli.errors import TdwiiError
from tdwii_cli.fileio import KEY_MODE, PUBLIC_MODE, FileSpec, write_files
from tdwii_cli.pki.certs import cert_pem, load_cert, make_ca, make_leaf, signed_by
from tdwii_cli.pki.crl import RevocationState, crl_pem, current_crl_number
from tdwii_cli.pki.keys import KeySpec, PrivateKey, key_pem, load_key, public_bytes
from tdwii_cli.pki.layout import (
    DEFAULT_CLIENT,
    DEFAULT_SERVER,
    KIND_FOLDER,
    NodeKind,
    NodePaths,
    ca_paths,
    node_paths,
)
from tdwii_cli.pki.policy import CA_DAYS, LEAF_DAYS
from tdwii_cli.pki.stores import DEFAULT_P12_PASSWORD, keystore_p12, truststore_p12

log = logging.getLogger("tdwii.pki")


@dataclass
class PkiResult:
    """What an operation wrote (paths in writing order) and what it used."""

    directory: Path
    files: list[Path] = field(default_factory=list)
    key_spec: KeySpec = field(default_factory=KeySpec)
    p12_password_is_default: bool = True
    nodes: dict[str, NodePaths] = field(default_factory=dict)
    certificates: dict[Path, x509.Certificate] = field(default_factory=dict)
    revoked_serial: int | None = None
    removed: list[Path] = field(default_factory=list)


def _check_folder_usable(directory: Path, *, create: bool) -> None:
    if directory.exists():
        if not directory.is_dir():
            raise TdwiiError(f"{directory} exists and is not a folder", hint="choose another --dir")
        if not os.access(directory, os.R_OK | os.W_OK | os.X_OK):
            raise TdwiiError(f"cannot write to folder {directory}", hint="check its permissions")
        return
    if not create:
        raise TdwiiError(
            f"PKI folder {directory} not found",
            hint=f"run `tdwii pki init --dir {directory}` first",
        )
    parent = directory.parent
    if not parent.is_dir():
        raise TdwiiError(
            f"cannot create {directory}: folder {parent} does not exist",
            hint="create it first or choose another --dir",
        )


def _leaf_files(
    paths: NodePaths,
    key: PrivateKey,
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    p12_password: str,
) -> list[FileSpec]:
    return [
        FileSpec(paths.cert, cert_pem(cert), PUBLIC_MODE),
        FileSpec(paths.key, key_pem(key), KEY_MODE),
        FileSpec(paths.p12, keystore_p12(paths.name, key, cert, ca_cert, p12_password), KEY_MODE),
    ]


def init_pki(
    directory: Path | str,
    *,
    key_spec: KeySpec | None = None,
    days: int = LEAF_DAYS,
    ca_days: int = CA_DAYS,
    org: str = "tdwii",
    sans: Sequence[str] = (),
    ca_password: bytes | None = None,
    p12_password: str = DEFAULT_P12_PASSWORD,
    force: bool = False,
    server_name: str = DEFAULT_SERVER,
    client_name: str = DEFAULT_CLIENT,
) -> PkiResult:
    """Create the root CA, its (empty) CRL and trust store, and the two default nodes.

    Refuses (changing nothing) when any of those files exists, unless `force`.
    Everything is generated in memory first and written as one staged step.
    """
    directory = Path(directory)
    key_spec = key_spec or KeySpec()
    _check_folder_usable(directory, create=True)
    ca = ca_paths(directory)
    server = node_paths(directory, "server", server_name)
    client = node_paths(directory, "client", client_name)
    targets = [ca.cert, ca.key, ca.p12, ca.crl]
    for node in (server, client):
        targets += [node.cert, node.key, node.p12]
    existing = [p for p in [*targets, ca.state] if p.exists()]
    if existing and not force:
        raise TdwiiError(
            f"{directory} already holds a PKI ({existing[0]} exists); nothing was changed",
            hint="add --force to replace it, or choose another --dir",
        )
    for path in targets:
        if path.exists() and not path.is_file():
            raise TdwiiError(f"{path} exists and is not a file", hint="remove it first")
    if not p12_password:
        raise TdwiiError("the PKCS#12 password must not be empty", hint="check --p12-password")

    ca_key, ca_cert = make_ca(org=org, days=ca_days, key_spec=key_spec)
    files = [
        FileSpec(ca.cert, cert_pem(ca_cert), PUBLIC_MODE),
        FileSpec(ca.key, key_pem(ca_key, ca_password), KEY_MODE),
        FileSpec(ca.p12, truststore_p12([ca_cert], p12_password), PUBLIC_MODE),
        FileSpec(ca.crl, crl_pem(ca_key, ca_cert, [], crl_number=1), PUBLIC_MODE),
    ]
    result = PkiResult(
        directory,
        key_spec=key_spec,
        p12_password_is_default=p12_password == DEFAULT_P12_PASSWORD,
    )
    result.certificates[ca.cert] = ca_cert
    for node in (server, client):
        key, cert = make_leaf(
            ca_key, ca_cert, node.name, days=days, key_spec=key_spec, sans=sans, org=org
        )
        files += _leaf_files(node, key, cert, ca_cert, p12_password)
        result.nodes[node.name] = node
        result.certificates[node.cert] = cert
    stale = [ca.state] if ca.state.exists() else []
    result.files = _write(files, remove=stale)
    result.removed = stale
    if force and existing:
        others = _other_nodes(directory, {server.folder, client.folder})
        if others:
            log.warning(
                "the CA was replaced; these nodes still carry certificates of the old CA: %s "
                "(reissue them with `tdwii pki issue ... --force`)",
                ", ".join(str(p) for p in others),
            )
    log.info("wrote a %s PKI in %s", key_spec.describe(), directory)
    return result


def _other_nodes(directory: Path, skip: set[Path]) -> list[Path]:
    found = []
    for sub in KIND_FOLDER.values():
        folder = directory / sub
        if folder.is_dir():
            found += [p for p in sorted(folder.iterdir()) if p.is_dir() and p not in skip]
    return found


def _write(files: Sequence[FileSpec], remove: Sequence[Path] = ()) -> list[Path]:
    try:
        return write_files(files, remove=remove)
    except OSError as exc:
        where = exc.filename or (files[0].path.parent if files else "")
        raise TdwiiError(
            f"cannot write {where}: {exc.strerror or exc}; nothing was changed",
            hint="check the folder's permissions and free space",
        ) from None


def load_ca(
    directory: Path | str, ca_password: bytes | None = None
) -> tuple[PrivateKey, x509.Certificate]:
    """The CA key and certificate of an existing PKI (checks they belong together)."""
    directory = Path(directory)
    _check_folder_usable(directory, create=False)
    ca = ca_paths(directory)
    if not ca.cert.is_file() or not ca.key.is_file():
        missing = ca.cert if not ca.cert.is_file() else ca.key
        raise TdwiiError(
            f"{missing} not found: {directory} holds no tdwii CA",
            hint=f"run `tdwii pki init --dir {directory}` first",
        )
    cert = load_cert(ca.cert)
    try:
        key = load_key(ca.key, ca_password)
    except TdwiiError as exc:
        if "is encrypted" in exc.message:
            raise TdwiiError(
                f"the CA key {ca.key} is encrypted", hint="pass --ca-password-file FILE"
            ) from None
        if "wrong password" in exc.message:
            raise TdwiiError(
                f"wrong password for the CA key {ca.key}", hint="check --ca-password-file"
            ) from None
        raise
    if public_bytes(key) != public_bytes(cert):
        raise TdwiiError(f"{ca.key} is not the key of {ca.cert}", hint="the CA folder is mixed up")
    return key, cert


def issue_node(
    directory: Path | str,
    kind: NodeKind,
    name: str,
    *,
    key_spec: KeySpec | None = None,
    days: int = LEAF_DAYS,
    org: str = "tdwii",
    sans: Sequence[str] = (),
    ca_password: bytes | None = None,
    p12_password: str = DEFAULT_P12_PASSWORD,
    force: bool = False,
) -> PkiResult:
    """Add a node signed by the existing CA: `DIR/servers/NAME/` or `DIR/clients/NAME/`."""
    directory = Path(directory)
    key_spec = key_spec or KeySpec()
    node = node_paths(directory, kind, name)
    ca_key, ca_cert = load_ca(directory, ca_password)
    if ca_cert.not_valid_after_utc <= utc_now():
        raise TdwiiError(
            f"the CA in {directory} expired on {ca_cert.not_valid_after_utc:%Y-%m-%d}",
            hint="make a new PKI with `tdwii pki init --force`",
        )
    existing = [p for p in (node.cert, node.key, node.p12) if p.exists()]
    if existing and not force:
        raise TdwiiError(
            f"{node.folder} already exists; nothing was changed",
            hint="add --force to replace it (revoke the old certificate with `tdwii pki revoke`)",
        )
    key, cert = make_leaf(ca_key, ca_cert, name, days=days, key_spec=key_spec, sans=sans, org=org)
    result = PkiResult(
        directory,
        key_spec=key_spec,
        p12_password_is_default=p12_password == DEFAULT_P12_PASSWORD,
    )
    result.files = _write(_leaf_files(node, key, cert, ca_cert, p12_password))
    result.nodes[name] = node
    result.certificates[node.cert] = cert
    log.info("issued %s certificate %s (serial %x)", kind, name, cert.serial_number)
    return result


def _find_node(directory: Path, name: str) -> NodePaths:
    if "/" in name:  # "servers/NAME" or "clients/NAME"
        folder, _, leaf = name.strip("/").partition("/")
        kinds = [k for k, f in KIND_FOLDER.items() if f == folder]
        if not kinds:
            raise TdwiiError(f"no node {name!r}", hint="use NAME, servers/NAME or clients/NAME")
        candidates = [node_paths(directory, kinds[0], leaf)]  # type: ignore[arg-type]
    else:
        candidates = [node_paths(directory, k, name) for k in ("server", "client")]
    found = [c for c in candidates if c.cert.is_file()]
    if not found:
        raise TdwiiError(
            f"no node {name!r} in {directory}",
            hint="expected servers/NAME/NAME.pem or clients/NAME/NAME.pem",
        )
    if len(found) > 1:
        raise TdwiiError(
            f"{name!r} is both a server and a client",
            hint=f"say servers/{name} or clients/{name}",
        )
    return found[0]


def revoke(directory: Path | str, name: str, ca_password: bytes | None = None) -> PkiResult:
    """Revoke node `name` (servers/NAME or clients/NAME) and reissue the CRL."""
    directory = Path(directory)
    ca_key, ca_cert = load_ca(directory, ca_password)
    node = _find_node(directory, name)
    cert = load_cert(node.cert)
    if cert.issuer != ca_cert.subject or not signed_by(cert, ca_cert):
        raise TdwiiError(f"{node.cert} was not issued by this CA", hint="it cannot be revoked here")
    ca = ca_paths(directory)
    state = RevocationState.load(ca.state)
    if cert.serial_number in state.serials():
        log.warning("%s (serial %x) was already revoked", node.cert, cert.serial_number)
    else:
        state.revoked.append(
            {
                "serial": f"{cert.serial_number:x}",
                "name": str(node.folder.relative_to(directory)),
                "revoked_at": utc_now().replace(microsecond=0).isoformat(),
            }
        )
    result = _issue_crl(directory, ca_key, ca_cert, state)
    result.revoked_serial = cert.serial_number
    result.nodes[node.name] = node
    log.info("revoked %s (serial %x)", node.cert, cert.serial_number)
    return result


def write_crl(directory: Path | str, ca_password: bytes | None = None) -> PkiResult:
    """Reissue `rootCA/rootCA.crl.pem` (fresh dates, next CRL number) from the saved state."""
    directory = Path(directory)
    ca_key, ca_cert = load_ca(directory, ca_password)
    state = RevocationState.load(ca_paths(directory).state)
    return _issue_crl(directory, ca_key, ca_cert, state)


def _issue_crl(
    directory: Path, ca_key: PrivateKey, ca_cert: x509.Certificate, state: RevocationState
) -> PkiResult:
    ca = ca_paths(directory)
    state.crl_number = max(state.crl_number, current_crl_number(ca.crl)) + 1
    data = crl_pem(ca_key, ca_cert, state.entries(), crl_number=state.crl_number)
    result = PkiResult(directory)
    result.files = _write(
        [FileSpec(ca.state, state.to_bytes(), PUBLIC_MODE), FileSpec(ca.crl, data, PUBLIC_MODE)]
    )
    return result
