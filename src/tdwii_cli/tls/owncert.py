"""Our own certificate, checked before any connection: validity, strength, key and password.

A one-shot client must not pay for importing `cryptography`, so the certificate is
read with a small DER reader (RFC 5280 section 4.1); a file it cannot read goes the
`cryptography` way. The key pair is loaded into the SSL context with one-line errors
that never show the password.
"""

from __future__ import annotations

import datetime as dt
import logging
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tdwii_cli.clock import utc_now
from tdwii_cli.errors import TdwiiError
from tdwii_cli.pki.policy import EXPIRY_WARNING_DAYS, MIN_EC_BITS, MIN_RSA_BITS

log = logging.getLogger("tdwii.tls")


KeyType = Literal["RSA", "EC", "other"]


@dataclass(frozen=True)
class OwnCertificate:
    """What the TLS layer needs to know of our own certificate after it was checked."""

    not_before: dt.datetime
    not_after: dt.datetime
    key_type: KeyType
    weakness: str = ""  # "" when none


def check_own_certificate(
    cert_path: Path,
    key_path: Path,
    password: bytes | None,
    ctx: ssl.SSLContext | None = None,
) -> OwnCertificate:
    """Refuse an unusable certificate of ours before any connection; warn when it expires soon.

    Refuses (one `TdwiiError` line): expired, not yet valid, RSA < 2048 or EC < 256 bits,
    an MD5/SHA-1/SHA-224 signature, a key that is not the certificate's, a missing or wrong
    key password (never shown). The pair is then loaded into `ctx` (a throwaway context when
    None). The certificate is read with a small DER reader so that a one-shot command does
    not pay for importing `cryptography`; anything it cannot read goes the `cryptography` way.
    Returns what was read of the certificate.
    """
    now = utc_now()
    try:
        facts = _leaf_facts(cert_path.read_bytes())
    except (OSError, ValueError, IndexError):
        facts = None
    if facts is None:  # unusual or broken file: the full parser gives the precise words
        facts = _leaf_facts_cryptography(cert_path, key_path, password)
    not_before, not_after, weakness = facts.not_before, facts.not_after, facts.weakness
    if not_before > now:
        raise TdwiiError(
            f"our certificate {cert_path} is not valid before {not_before:%Y-%m-%d %H:%M} UTC",
            hint="check this machine's clock or issue a new one",
        )
    if not_after < now:
        raise TdwiiError(
            f"our certificate {cert_path} expired on {not_after:%Y-%m-%d}",
            hint="issue a new one: tdwii pki issue",
        )
    if weakness:
        raise TdwiiError(f"our certificate {cert_path} is too weak: {weakness}")
    load_pair(ctx or ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), cert_path, key_path, password)
    days = (not_after - now).days
    if days < EXPIRY_WARNING_DAYS:
        log.warning(
            "our certificate %s expires in %d days (%s)", cert_path, days, f"{not_after:%Y-%m-%d}"
        )
    return facts


class _PasswordNeeded(Exception):
    pass


def load_pair(ctx: ssl.SSLContext, cert: Path, key: Path, password: bytes | None) -> None:
    """`load_cert_chain` with one-line errors; never prompts, never shows the password (the
    loading step of `check_own_certificate`, for a pair it has checked already)."""
    asked: list[bool] = []

    def give_password() -> bytes:
        asked.append(True)
        if not password:
            raise _PasswordNeeded
        return password

    try:
        ctx.load_cert_chain(str(cert), str(key), password=give_password)
    except _PasswordNeeded:
        raise TdwiiError(
            f"private key {key} is encrypted", hint="give its password: --key-password-file FILE"
        ) from None
    except ssl.SSLError as exc:
        text = f"{exc.reason} {exc}".lower()
        if "key_values_mismatch" in text or "key values mismatch" in text:
            raise TdwiiError(
                f"private key {key} does not belong to certificate {cert}",
                hint="pass the key made with that certificate",
            ) from None
        if asked:
            raise TdwiiError(
                f"wrong password for private key {key}", hint="check --key-password-file"
            ) from None
        raise TdwiiError(
            f"cannot use certificate {cert} with key {key}: {exc.reason or 'unreadable'}",
            hint="expected PEM files from `tdwii pki`",
        ) from None


# -- a minimal DER reader for our own leaf certificate (RFC 5280 section 4.1) --------------

_RSA_OIDS = {b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x01", b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0a"}
_EC_OID = b"\x2a\x86\x48\xce\x3d\x02\x01"
# signature algorithm OIDs whose hash is in WEAK_HASHES
_WEAK_SIGNATURES = {
    b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x04": "MD5",
    b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x05": "SHA1",
    b"\x2a\x86\x48\xce\x3d\x04\x01": "SHA1",
    b"\x2a\x86\x48\xce\x38\x04\x03": "SHA1",
    b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0e": "SHA224",
    b"\x2a\x86\x48\xce\x3d\x04\x03\x01": "SHA224",
}


def _tlv(der: bytes, pos: int) -> tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at `pos`."""
    tag, length = der[pos], der[pos + 1]
    pos += 2
    if length & 0x80:
        count = length & 0x7F
        if not 1 <= count <= 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(der[pos : pos + count], "big")
        pos += count
    if pos + length > len(der):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _children(der: bytes, start: int, end: int) -> list[tuple[int, int, int]]:
    out = []
    while start < end:
        tag, vs, ve = _tlv(der, start)
        out.append((tag, vs, ve))
        start = ve
    return out


def _der_time(tag: int, value: bytes) -> dt.datetime:
    """A certificate's UTCTime or GeneralizedTime (RFC 5280: in UTC, with seconds)."""
    text = value.decode("ascii")
    if not text.endswith("Z"):
        raise ValueError("certificate time not in UTC")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError("not a time")
    if len(text) != 15 or not text[:14].isdigit():
        raise ValueError("certificate time not YYYYMMDDHHMMSSZ")
    month, day, hour, minute, second = (int(text[i : i + 2]) for i in range(4, 14, 2))
    return dt.datetime(int(text[:4]), month, day, hour, minute, second, tzinfo=dt.timezone.utc)


def _leaf_facts(pem: bytes) -> OwnCertificate | None:
    """The validity, key type and weakness of the first certificate in a PEM file, or None
    when it holds something this reader does not handle (then `cryptography` decides)."""
    begin = pem.find(b"-----BEGIN CERTIFICATE-----")
    stop = pem.find(b"-----END CERTIFICATE-----", begin)
    if begin < 0 or stop < 0:
        return None
    der = ssl.PEM_cert_to_DER_cert(pem[begin : stop + 25].decode("ascii"))
    _, cs, _ = _tlv(der, 0)
    tbs_tag, ts, te = _tlv(der, cs)
    if tbs_tag != 0x30:
        return None
    fields = _children(der, ts, te)
    if fields[0][0] == 0xA0:  # explicit version
        fields = fields[1:]
    _serial, sig_alg, _issuer, validity, _subject, spki = fields[:6]
    times = _children(der, validity[1], validity[2])
    not_before = _der_time(times[0][0], der[times[0][1] : times[0][2]])
    not_after = _der_time(times[1][0], der[times[1][1] : times[1][2]])
    sig_oid = _children(der, sig_alg[1], sig_alg[2])[0]
    weak_sig = _WEAK_SIGNATURES.get(der[sig_oid[1] : sig_oid[2]])
    alg, bits = _children(der, spki[1], spki[2])[:2]
    alg_oid = _children(der, alg[1], alg[2])[0]
    oid = der[alg_oid[1] : alg_oid[2]]
    key_bits = der[bits[1] + 1 : bits[2]]  # after the unused-bits byte
    weakness = ""
    key_type: KeyType = "RSA" if oid in _RSA_OIDS else "EC"
    if oid in _RSA_OIDS:
        _, qs, qe = _tlv(der, bits[1] + 1)  # RSAPublicKey ::= SEQUENCE {modulus, exponent}
        _, ms, me = _children(der, qs, qe)[0]
        size = int.from_bytes(der[ms:me], "big").bit_length()
        if size < MIN_RSA_BITS:
            weakness = f"RSA key of {size} bits (at least {MIN_RSA_BITS} required)"
    elif oid == _EC_OID:
        point = len(key_bits) - 1  # 04||X||Y, or 02/03||X when compressed
        size = (point // 2 if key_bits[0] == 4 else point) * 8
        if size < MIN_EC_BITS:
            weakness = f"EC key of {size} bits (at least {MIN_EC_BITS} required)"
    else:
        return None
    if not weakness and weak_sig:
        weakness = f"{weak_sig} signature (SHA-256 or better required)"
    return OwnCertificate(not_before, not_after, key_type, weakness)


def _leaf_facts_cryptography(
    cert_path: Path, key_path: Path, password: bytes | None
) -> OwnCertificate:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    from tdwii_cli.pki.certs import key_problem, load_cert
    from tdwii_cli.pki.keys import load_key

    cert = load_cert(cert_path)
    load_key(key_path, password)  # its own clear errors (password, not a key)
    public = cert.public_key()
    key_type: KeyType = (
        "RSA"
        if isinstance(public, rsa.RSAPublicKey)
        else "EC"
        if isinstance(public, ec.EllipticCurvePublicKey)
        else "other"
    )
    return OwnCertificate(
        cert.not_valid_before_utc, cert.not_valid_after_utc, key_type, key_problem(cert) or ""
    )
