"""A small PKI for DICOM TLS nodes: keys, root CA, leaf certificates, CRL, PKCS#12 stores.

Layout written by `init_pki` (the one the seed's documentation and the TLS
option defaults expect)::

    DIR/rootCA/rootCA.pem, rootCA.key, rootCA.p12 (Java trust store), rootCA.crl.pem
    DIR/servers/worklistmanager/worklistmanager.pem, .key, .p12 (Java key store)
    DIR/clients/workitemcreator/workitemcreator.pem, .key, .p12

Private keys are PEM PKCS#8 files created 0600; certificates, CRL and the trust
store 0644; leaf key stores 0600. Every write is atomic (see `tdwii_cli.fileio`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import logging
import os
import re
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Union

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tdwii_cli.errors import TdwiiError
from tdwii_cli.fileio import KEY_MODE, PUBLIC_MODE, FileSpec, write_atomic, write_files

log = logging.getLogger("tdwii.pki")

PrivateKey = Union[ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey]  # noqa: UP007
NodeKind = Literal["server", "client"]

MIN_RSA_BITS = 2048
MIN_EC_BITS = 256
DEFAULT_P12_PASSWORD = "secret"  # dcm4che's default store password
DEFAULT_SERVER = "worklistmanager"
DEFAULT_CLIENT = "workitemcreator"
CA_NAME = "rootCA"
CRL_DAYS = 30
BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock differences between nodes
_KIND_FOLDER = {"server": "servers", "client": "clients"}
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


# --------------------------------------------------------------------------- keys


@dataclass(frozen=True)
class KeySpec:
    """Which key to generate: EC P-256 (default) or RSA with `rsa_bits` (>= 2048)."""

    kind: Literal["ec", "rsa"] = "ec"
    rsa_bits: int = 2048

    def __post_init__(self) -> None:
        if self.kind not in ("ec", "rsa"):
            raise TdwiiError(f"unknown key type {self.kind!r}", hint="use ec or rsa")
        if self.kind == "rsa" and self.rsa_bits < MIN_RSA_BITS:
            raise TdwiiError(
                f"RSA keys of {self.rsa_bits} bits are too weak",
                hint=f"use at least {MIN_RSA_BITS} bits (2048, 3072 or 4096)",
            )

    def describe(self) -> str:
        return "EC P-256" if self.kind == "ec" else f"RSA {self.rsa_bits}"


def generate_key(spec: KeySpec | None = None) -> PrivateKey:
    """A new private key as `spec` says (EC P-256 by default)."""
    spec = spec or KeySpec()
    if spec.kind == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=spec.rsa_bits)


def key_spec_of(key: PrivateKey) -> KeySpec | None:
    """The `KeySpec` matching an existing key (None for keys tdwii would not generate)."""
    if isinstance(key, rsa.RSAPrivateKey) and key.key_size >= MIN_RSA_BITS:
        return KeySpec("rsa", key.key_size)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return KeySpec("ec")
    return None


def _public_bytes(key: PrivateKey | x509.Certificate) -> bytes:
    pub = key.public_key()
    return pub.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# --------------------------------------------------------------------------- certificates


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _name(common_name: str, org: str | None) -> x509.Name:
    attrs = []
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def local_hostname() -> str | None:
    """This machine's host name when it is a usable DNS name (and not just `localhost`)."""
    name = socket.gethostname().strip().rstrip(".").lower()
    if not name or name == "localhost" or not _HOSTNAME.match(name):
        return None
    return name


def default_sans() -> list[str]:
    """`localhost`, `127.0.0.1`, `::1` and the host name."""
    names = ["localhost", "127.0.0.1", "::1"]
    host = local_hostname()
    if host:
        names.append(host)
    return names


def parse_san(value: str) -> x509.GeneralName:
    """An IP address or a DNS name (`*.example.org` allowed) as a SAN entry."""
    text = value.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        pass
    if (text.startswith("*.") and _HOSTNAME.match(text[2:])) or _HOSTNAME.match(text):
        return x509.DNSName(text.lower())
    raise TdwiiError(f"{value!r} is neither a host name nor an IP address", hint="check --san")


def _san_list(sans: Sequence[str], with_defaults: bool) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for text in [*(default_sans() if with_defaults else []), *sans]:
        name = parse_san(text)
        if name not in result:
            result.append(name)
    return result


def _hash_for(key: PrivateKey) -> hashes.SHA256 | hashes.SHA384 | hashes.SHA512:
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 384:
        return hashes.SHA512()
    if isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.key_size > 256:
        return hashes.SHA384()
    return hashes.SHA256()


def make_ca(
    common_name: str = "tdwii Root CA",
    *,
    org: str = "tdwii",
    days: int = 3650,
    key_spec: KeySpec | None = None,
    key: PrivateKey | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[PrivateKey, x509.Certificate]:
    """A self-signed root CA: BasicConstraints(ca, path_length=0) and keyCertSign+cRLSign."""
    if days < 1:
        raise TdwiiError(f"--ca-days must be at least 1 (got {days})")
    key = key or generate_key(key_spec)
    now = _now()
    start = not_before or now - BACKDATE
    end = not_after or now + dt.timedelta(days=days)
    name = _name(common_name, org)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, _hash_for(key))
    )
    return key, cert


def make_leaf(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    name: str,
    *,
    days: int = 398,
    key_spec: KeySpec | None = None,
    key: PrivateKey | None = None,
    sans: Sequence[str] = (),
    default_sans: bool = True,
    org: str = "tdwii",
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[PrivateKey, x509.Certificate]:
    """A node certificate signed by the CA: CN=`name`, SANs, serverAuth+clientAuth, SHA-256.

    `key` lets a caller bring its own key (tests use a weak one on purpose);
    `not_before`/`not_after` override the validity (expired or future certificates).
    """
    if days < 1:
        raise TdwiiError(f"--days must be at least 1 (got {days})")
    key = key or generate_key(key_spec)
    now = _now()
    start = not_before or now - BACKDATE
    end = not_after or now + dt.timedelta(days=days)
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name, org))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=is_rsa,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_aki(ca_cert), critical=False)
    )
    names = _san_list(sans, default_sans)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def _aki(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]


# --------------------------------------------------------------------------- PEM / PKCS#12 I/O


def key_pem(key: PrivateKey, password: bytes | None = None) -> bytes:
    """PKCS#8 PEM, encrypted (best available) when `password` is given."""
    enc: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(password)
        if password
        else serialization.NoEncryption()
    )
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_key(path: Path | str, key: PrivateKey, password: bytes | None = None) -> None:
    """Write a private key as PEM, atomically, created 0600."""
    write_atomic(Path(path), key_pem(key, password), KEY_MODE)


def write_cert(path: Path | str, cert: x509.Certificate) -> None:
    """Write a certificate as PEM, atomically, 0644."""
    write_atomic(Path(path), cert_pem(cert), PUBLIC_MODE)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TdwiiError(f"{what} {path} not found") from None
    except IsADirectoryError:
        raise TdwiiError(f"{what} {path} is a folder, not a file") from None
    except OSError as exc:
        raise TdwiiError(f"cannot read {what} {path}: {exc.strerror}") from None


def load_certs(path: Path | str) -> list[x509.Certificate]:
    """Every certificate in a PEM file (a chain is fine) or the one in a DER file."""
    path = Path(path)
    data = _read(path, "certificate")
    if b"-----BEGIN" in data:
        try:
            certs = x509.load_pem_x509_certificates(data)
        except ValueError:
            certs = []
        if certs:
            return certs
    else:
        try:
            return [x509.load_der_x509_certificate(data)]
        except ValueError:
            pass
    hint = "a private key, not a certificate" if b"PRIVATE KEY-----" in data else ""
    raise TdwiiError(
        f"{path} is not a certificate",
        hint=hint or "expected a PEM or DER X.509 certificate",
    )


def load_cert(path: Path | str) -> x509.Certificate:
    """The first certificate of a PEM (or DER) file; a clear error otherwise."""
    return load_certs(path)[0]


def load_key(path: Path | str, password: bytes | None = None) -> PrivateKey:
    """A PEM (or DER) private key; clear errors for a wrong/missing password or a non-key."""
    path = Path(path)
    data = _read(path, "private key")
    encrypted = b"ENCRYPTED" in data or b"Proc-Type: 4,ENCRYPTED" in data
    try:
        if b"-----BEGIN" in data:
            key = serialization.load_pem_private_key(data, password=password or None)
        else:
            key = serialization.load_der_private_key(data, password=password or None)
    except TypeError:
        if encrypted or not password:
            raise TdwiiError(
                f"private key {path} is encrypted", hint="give its password file"
            ) from None
        raise TdwiiError(
            f"private key {path} is not encrypted but a password was given",
            hint="drop the password file option",
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        if encrypted:
            raise TdwiiError(
                f"wrong password for private key {path}", hint="check the password file"
            ) from None
        raise TdwiiError(
            f"{path} is not a private key", hint="expected a PEM private key"
        ) from None
    if not isinstance(key, (ec.EllipticCurvePrivateKey, rsa.RSAPrivateKey)):
        raise TdwiiError(f"private key {path} is neither EC nor RSA", hint="tdwii uses EC or RSA")
    return key


def read_password_file(path: Path | str) -> bytes:
    """The first line of a password file (never logged)."""
    path = Path(path)
    data = _read(path, "password file")
    lines = data.splitlines()
    password = lines[0] if lines else b""
    if not password:
        raise TdwiiError(
            f"password file {path} is empty", hint="put the password on its first line"
        )
    return password


def keystore_p12(
    name: str,
    key: PrivateKey,
    cert: x509.Certificate,
    ca_cert: x509.Certificate,
    password: str = DEFAULT_P12_PASSWORD,
) -> bytes:
    """A PKCS#12 key store (Java `PrivateKeyEntry`): key, certificate and the CA."""
    if not password:
        raise TdwiiError("the PKCS#12 password must not be empty", hint="check --p12-password")
    return pkcs12.serialize_key_and_certificates(
        name.encode(),
        key,
        cert,
        [ca_cert],
        serialization.BestAvailableEncryption(password.encode()),
    )


def truststore_p12(
    ca_certs: Sequence[x509.Certificate], password: str = DEFAULT_P12_PASSWORD
) -> bytes:
    """A Java trust store: certificate bags with Oracle's trusted-key-usage attribute."""
    if not password:
        raise TdwiiError("the PKCS#12 password must not be empty", hint="check --p12-password")
    bags = []
    for i, cert in enumerate(ca_certs):
        alias = _common_name(cert) or f"ca{i}"
        bags.append(pkcs12.PKCS12Certificate(cert, alias.lower().encode()))
    return pkcs12.serialize_java_truststore(
        bags, serialization.BestAvailableEncryption(password.encode())
    )


def _common_name(cert: x509.Certificate) -> str:
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode(errors="replace")


# --------------------------------------------------------------------------- layout


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
    if kind not in _KIND_FOLDER:
        raise TdwiiError(f"unknown node kind {kind!r}", hint="use server or client")
    check_node_name(name)
    return NodePaths(name, Path(directory) / _KIND_FOLDER[kind] / name)


def check_node_name(name: str) -> None:
    """Node names become folder and file names: letters, digits, `.`, `_`, `-`."""
    if not _NODE_NAME.match(name) or name in (".", "..") or name == CA_NAME:
        raise TdwiiError(
            f"{name!r} is not a usable node name",
            hint="use letters, digits, '.', '_' or '-' (up to 64), not starting with a dot",
        )


@dataclass
class PkiResult:
    """What an operation wrote (paths in writing order) and what it used."""

    directory: Path
    files: list[Path] = field(default_factory=list)
    key_spec: KeySpec = field(default_factory=KeySpec)
    p12_password_is_default: bool = True
    ca_key_encrypted: bool = False
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
    days: int = 398,
    ca_days: int = 3650,
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
        ca_key_encrypted=bool(ca_password),
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
    for sub in _KIND_FOLDER.values():
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
    if _public_bytes(key) != _public_bytes(cert):
        raise TdwiiError(f"{ca.key} is not the key of {ca.cert}", hint="the CA folder is mixed up")
    return key, cert


def issue_node(
    directory: Path | str,
    kind: NodeKind,
    name: str,
    *,
    key_spec: KeySpec | None = None,
    days: int = 398,
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
    if ca_cert.not_valid_after_utc <= _now():
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


# --------------------------------------------------------------------------- revocation


def crl_pem(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    revoked: Sequence[tuple[int, dt.datetime]],
    *,
    crl_number: int = 1,
    days: int = CRL_DAYS,
) -> bytes:
    """A PEM CRL signed by the CA listing `(serial, revocation time)` pairs."""
    now = _now()
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca_cert.subject)
        .last_update(now - BACKDATE)
        .next_update(now + dt.timedelta(days=days))
        .add_extension(x509.CRLNumber(crl_number), critical=False)
        .add_extension(_aki(ca_cert), critical=False)
    )
    for serial, when in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when).build()
        )
    return builder.sign(ca_key, _hash_for(ca_key)).public_bytes(serialization.Encoding.PEM)


@dataclass
class RevocationState:
    """The revoked serials (kept in `rootCA/rootCA.revoked.json`) and the last CRL number."""

    crl_number: int = 0
    revoked: list[dict[str, str]] = field(default_factory=list)

    @classmethod
    def load(cls, path: Path) -> RevocationState:
        if not path.exists():
            return cls()
        try:
            data = json.loads(_read(path, "revocation list"))
            return cls(int(data.get("crl_number", 0)), list(data.get("revoked", [])))
        except (ValueError, TypeError, AttributeError):
            raise TdwiiError(
                f"{path} is damaged", hint="fix or remove it (its serials will be forgotten)"
            ) from None

    def to_bytes(self) -> bytes:
        return (
            json.dumps({"crl_number": self.crl_number, "revoked": self.revoked}, indent=2) + "\n"
        ).encode()

    def serials(self) -> set[int]:
        return {int(item["serial"], 16) for item in self.revoked}

    def entries(self) -> list[tuple[int, dt.datetime]]:
        return [
            (int(item["serial"], 16), dt.datetime.fromisoformat(item["revoked_at"]))
            for item in self.revoked
        ]


def _find_node(directory: Path, name: str) -> NodePaths:
    if "/" in name:  # "servers/NAME" or "clients/NAME"
        folder, _, leaf = name.strip("/").partition("/")
        kinds = [k for k, f in _KIND_FOLDER.items() if f == folder]
        if not kinds:
            raise TdwiiError(f"no node {name!r}", hint="use NAME, servers/NAME or clients/NAME")
        candidates = [node_paths(directory, kinds[0], leaf)]  # type: ignore[arg-type]
    else:
        candidates = [node_paths(directory, k, name) for k in ("server", "client")]  # type: ignore[arg-type]
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
    if cert.issuer != ca_cert.subject or not _signed_by(cert, ca_cert):
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
                "revoked_at": _now().replace(microsecond=0).isoformat(),
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
    state.crl_number = max(state.crl_number, _current_crl_number(ca.crl)) + 1
    data = crl_pem(ca_key, ca_cert, state.entries(), crl_number=state.crl_number)
    result = PkiResult(directory)
    result.files = _write(
        [FileSpec(ca.state, state.to_bytes(), PUBLIC_MODE), FileSpec(ca.crl, data, PUBLIC_MODE)]
    )
    return result


def _current_crl_number(path: Path) -> int:
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
        return crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    except (OSError, ValueError, x509.ExtensionNotFound):
        return 0


def load_crl(path: Path | str) -> x509.CertificateRevocationList:
    """A PEM (or DER) CRL."""
    path = Path(path)
    data = _read(path, "CRL")
    try:
        if b"-----BEGIN" in data:
            return x509.load_pem_x509_crl(data)
        return x509.load_der_x509_crl(data)
    except ValueError:
        raise TdwiiError(f"{path} is not a CRL", hint="expected a PEM or DER X.509 CRL") from None


# --------------------------------------------------------------------------- verification


def _signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def key_problem(cert: x509.Certificate) -> str | None:
    """Why the certificate's key or signature is too weak for tdwii, or None."""
    pub = cert.public_key()
    if isinstance(pub, rsa.RSAPublicKey) and pub.key_size < MIN_RSA_BITS:
        return f"RSA key of {pub.key_size} bits (at least {MIN_RSA_BITS} required)"
    if isinstance(pub, ec.EllipticCurvePublicKey) and pub.curve.key_size < MIN_EC_BITS:
        return f"EC key of {pub.curve.key_size} bits (at least {MIN_EC_BITS} required)"
    algo = cert.signature_hash_algorithm
    if algo is not None and algo.name in ("md5", "sha1", "sha224"):
        return f"{algo.name.upper()} signature (SHA-256 or better required)"
    return None


def verify_chain(
    cert: x509.Certificate,
    ca_certs: Sequence[x509.Certificate],
    intermediates: Sequence[x509.Certificate] = (),
    *,
    at: dt.datetime | None = None,
) -> str | None:
    """Check that `cert` chains to one of `ca_certs`; return None if so, else the reason.

    Uses `cryptography.x509.verification` (signatures, validity, CA constraints)
    without requiring a particular EKU or host name. A certificate that is itself
    one of the trust anchors verifies.
    """
    from cryptography.x509.verification import (
        ExtensionPolicy,
        PolicyBuilder,
        Store,
        VerificationError,
    )

    if not ca_certs:
        return "no CA certificate given"
    if any(cert == ca for ca in ca_certs):
        return None
    builder = (
        PolicyBuilder()
        .store(Store(list(ca_certs)))
        .time(at or _now())
        .extension_policies(
            ca_policy=ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=ExtensionPolicy.permit_all(),
        )
    )
    try:
        builder.build_client_verifier().verify(cert, list(intermediates))
    except (VerificationError, ValueError) as exc:
        text = str(exc).removeprefix("validation failed: ")
        if "candidates exhausted" in text:
            return "not issued by the given CA"
        if "not valid at validation time" in text:
            return "not valid at this time (expired or not yet valid)"
        return text
    return None
