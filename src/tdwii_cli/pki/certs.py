"""Certificates: names and SANs, the root CA and node certificates, PEM in and out, checks."""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tdwii_cli.clock import utc_now
from tdwii_cli.errors import TdwiiError
from tdwii_cli.fileio import PUBLIC_MODE, write_atomic
from tdwii_cli.pki.keys import KeySpec, PrivateKey, generate_key, hash_for, read_file
from tdwii_cli.pki.policy import (
    BACKDATE,
    CA_DAYS,
    LEAF_DAYS,
    MIN_EC_BITS,
    MIN_RSA_BITS,
    WEAK_HASHES,
)

_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(\.{_LABEL})*$")


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


_KEY_USAGES = (
    "digital_signature",
    "content_commitment",
    "key_encipherment",
    "data_encipherment",
    "key_agreement",
    "key_cert_sign",
    "crl_sign",
    "encipher_only",
    "decipher_only",
)


def _key_usage(*allowed: str) -> x509.KeyUsage:
    """A KeyUsage extension with exactly the `allowed` usages."""
    return x509.KeyUsage(**{usage: usage in allowed for usage in _KEY_USAGES})


def _key_and_validity(
    key: PrivateKey | None,
    key_spec: KeySpec | None,
    days: int,
    not_before: dt.datetime | None,
    not_after: dt.datetime | None,
    days_option: str,
) -> tuple[PrivateKey, dt.datetime, dt.datetime]:
    """The key to certify (a new one unless given) and the validity: from a few minutes ago
    (clocks differ) for `days`, unless `not_before`/`not_after` say otherwise."""
    if days < 1:
        raise TdwiiError(f"{days_option} must be at least 1 (got {days})")
    now = utc_now()
    start = not_before or now - BACKDATE
    end = not_after or now + dt.timedelta(days=days)
    return key or generate_key(key_spec), start, end


def make_ca(
    common_name: str = "tdwii Root CA",
    *,
    org: str = "tdwii",
    days: int = CA_DAYS,
    key_spec: KeySpec | None = None,
    key: PrivateKey | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
) -> tuple[PrivateKey, x509.Certificate]:
    """A self-signed root CA: BasicConstraints(ca, path_length=0) and keyCertSign+cRLSign."""
    key, start, end = _key_and_validity(key, key_spec, days, not_before, not_after, "--ca-days")
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
            _key_usage("key_cert_sign", "crl_sign"),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hash_for(key))
    )
    return key, cert


def make_leaf(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    name: str,
    *,
    days: int = LEAF_DAYS,
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
    key, start, end = _key_and_validity(key, key_spec, days, not_before, not_after, "--days")
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
            _key_usage("digital_signature", *(["key_encipherment"] if is_rsa else [])),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(authority_key_id(ca_cert), critical=False)
    )
    names = _san_list(sans, default_sans)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    """The AuthorityKeyIdentifier that names `ca_cert` (from its SKI when it has one)."""
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        return x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())  # type: ignore[arg-type]


def cert_pem(cert: x509.Certificate) -> bytes:
    """The certificate as PEM."""
    return cert.public_bytes(serialization.Encoding.PEM)


def write_cert(path: Path | str, cert: x509.Certificate) -> None:
    """Write a certificate as PEM, atomically, 0644."""
    write_atomic(Path(path), cert_pem(cert), PUBLIC_MODE)


def load_certs(path: Path | str) -> list[x509.Certificate]:
    """Every certificate in a PEM file (a chain is fine) or the one in a DER file."""
    path = Path(path)
    data = read_file(path, "certificate")
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


def common_name(cert: x509.Certificate) -> str:
    """The subject's CN ('' when it has none)."""
    attrs = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    value = attrs[0].value if attrs else ""
    return value if isinstance(value, str) else value.decode(errors="replace")


def signed_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """Whether `issuer` signed `cert` (signature and names; no validity or policy check)."""
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
    if algo is not None and algo.name in WEAK_HASHES:
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
        .time(at or utc_now())
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
