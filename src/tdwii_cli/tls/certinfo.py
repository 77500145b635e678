"""Summarise an X.509 certificate: as plain data (`CertInfo`) or as one short line.

Used by `tdwii pki show` and by the connection log. `cert_info` accepts a
`cryptography` certificate or DER bytes (for example
`ssl.SSLSocket.getpeercert(binary_form=True)`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import dsa, ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tdwii_cli.clock import utc_now
from tdwii_cli.pki.policy import EXPIRY_WARNING_DAYS

Validity = Literal["ok", "expiring", "expired", "not yet valid"]

_EKU_NAMES = {
    ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth",
    ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth",
    ExtendedKeyUsageOID.CODE_SIGNING: "codeSigning",
    ExtendedKeyUsageOID.EMAIL_PROTECTION: "emailProtection",
    ExtendedKeyUsageOID.TIME_STAMPING: "timeStamping",
    ExtendedKeyUsageOID.OCSP_SIGNING: "OCSPSigning",
    ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE: "anyExtendedKeyUsage",
}


@dataclass(frozen=True)
class CertInfo:
    """The facts about one certificate that people check when TLS fails."""

    subject: str  # RFC 4514
    subject_cn: str
    issuer: str
    issuer_cn: str
    sans: tuple[str, ...]
    key_type: str  # "EC", "RSA", "Ed25519", ...
    key_bits: int
    curve: str  # "secp256r1" for EC, "" otherwise
    not_before: dt.datetime
    not_after: dt.datetime
    serial_hex: str
    sha256: str  # colon-separated upper-case hex
    eku: tuple[str, ...]
    is_ca: bool
    self_signed: bool
    signature_hash: str  # "sha256", ... ("" when the algorithm has none)

    @property
    def key_description(self) -> str:
        """E.g. "EC P-256 (secp256r1)" or "RSA 2048"."""
        if self.key_type == "EC":
            return f"EC P-{self.key_bits} ({self.curve})"
        if self.key_type in ("RSA", "DSA"):
            return f"{self.key_type} {self.key_bits}"
        return self.key_type

    def days_left(self, now: dt.datetime | None = None) -> int:
        """Whole days until `not_after` (negative once expired)."""
        now = now or utc_now()
        return (self.not_after - now).days

    def validity(
        self, now: dt.datetime | None = None, warn_days: int = EXPIRY_WARNING_DAYS
    ) -> Validity:
        """ "ok", "expiring" (fewer than `warn_days` left), "expired" or "not yet valid"."""
        now = now or utc_now()
        if now < self.not_before:
            return "not yet valid"
        if now > self.not_after:
            return "expired"
        if self.not_after - now < dt.timedelta(days=warn_days):
            return "expiring"
        return "ok"


def _cn(name: x509.Name) -> str:
    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if not attrs:
        return ""
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode(errors="replace")


def _sans(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    out: list[str] = []
    for name in ext:
        if isinstance(name, x509.DNSName):
            out.append(f"DNS:{name.value}")
        elif isinstance(name, x509.IPAddress):
            out.append(f"IP:{name.value}")
        elif isinstance(name, x509.RFC822Name):
            out.append(f"email:{name.value}")
        elif isinstance(name, x509.UniformResourceIdentifier):
            out.append(f"URI:{name.value}")
        else:
            out.append(str(name.value))
    return tuple(out)


def _eku(cert: x509.Certificate) -> tuple[str, ...]:
    try:
        ext = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except (x509.ExtensionNotFound, ValueError):
        return ()
    return tuple(_EKU_NAMES.get(oid, oid.dotted_string) for oid in ext)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


def _key(cert: x509.Certificate) -> tuple[str, int, str]:
    pub = cert.public_key()
    if isinstance(pub, ec.EllipticCurvePublicKey):
        return "EC", pub.curve.key_size, pub.curve.name
    if isinstance(pub, rsa.RSAPublicKey):
        return "RSA", pub.key_size, ""
    if isinstance(pub, dsa.DSAPublicKey):
        return "DSA", pub.key_size, ""
    if isinstance(pub, ed25519.Ed25519PublicKey):
        return "Ed25519", 256, ""
    if isinstance(pub, ed448.Ed448PublicKey):
        return "Ed448", 456, ""
    return type(pub).__name__, 0, ""


def cert_info(cert: x509.Certificate | bytes) -> CertInfo:
    """Plain-data summary of a certificate (or of its DER bytes)."""
    if isinstance(cert, (bytes, bytearray, memoryview)):
        cert = x509.load_der_x509_certificate(bytes(cert))
    key_type, key_bits, curve = _key(cert)
    algo = cert.signature_hash_algorithm
    return CertInfo(
        subject=cert.subject.rfc4514_string(),
        subject_cn=_cn(cert.subject),
        issuer=cert.issuer.rfc4514_string(),
        issuer_cn=_cn(cert.issuer),
        sans=_sans(cert),
        key_type=key_type,
        key_bits=key_bits,
        curve=curve,
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        serial_hex=f"{cert.serial_number:X}",
        sha256=cert.fingerprint(hashes.SHA256()).hex(":").upper(),
        eku=_eku(cert),
        is_ca=_is_ca(cert),
        self_signed=cert.issuer == cert.subject,
        signature_hash=algo.name if algo is not None else "",
    )


def one_line(info: CertInfo, now: dt.datetime | None = None) -> str:
    """A short summary for a log line: CN, issuer, key, expiry and a fingerprint prefix."""
    state = info.validity(now)
    left = info.days_left(now)
    until = info.not_after.strftime("%Y-%m-%d")
    when = f"until {until} ({left} d)" if state in ("ok", "expiring") else f"{state} ({until})"
    return (
        f"CN={info.subject_cn or '-'} issuer={info.issuer_cn or '-'} "
        f"{info.key_description} {when} sha256={info.sha256[:23]}"
    )
