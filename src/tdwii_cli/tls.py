"""TLS contexts for the secure transport profiles, own-certificate checks, handshake diagnosis.

Profiles follow DICOM PS3.15 Annex B (BCP 195, RFC 8996, RFC 9325): TLS 1.0
and 1.1 are never negotiated; `set_ciphers` governs TLS 1.2 only (TLS 1.3 uses
OpenSSL's three AEAD suites).
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from tdwii_cli import exitcodes
from tdwii_cli.errors import TdwiiError
from tdwii_cli.tlsoptions import TlsOptions

log = logging.getLogger("tdwii.tls")

ALPN = "dicom"
WARN_DAYS = 30

_RFC9325 = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384"
)
_ND = (
    "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384:"
    "DHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES256-GCM-SHA384"
)
_EX = _ND + ":ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384"


@dataclass(frozen=True)
class Profile:
    """A secure transport connection profile: TLS versions and TLS 1.2 cipher suites."""

    name: str
    ciphers: str
    maximum: ssl.TLSVersion
    description: str


PROFILES: dict[str, Profile] = {
    "bcp195-rfc8996": Profile(
        "bcp195-rfc8996",
        _RFC9325,
        ssl.TLSVersion.TLSv1_3,
        "BCP 195 RFC 8996 (RFC 9325 suites), TLS 1.2 and 1.3",
    ),
    "bcp195-nd": Profile(
        "bcp195-nd", _ND, ssl.TLSVersion.TLSv1_3, "BCP 195 non-downgrading, TLS 1.2 and 1.3"
    ),
    "bcp195-ex": Profile("bcp195-ex", _EX, ssl.TLSVersion.TLSv1_2, "BCP 195 extended, TLS 1.2"),
}


def _base_context(
    purpose: int, opts: TlsOptions, cls: type[ssl.SSLContext] = ssl.SSLContext
) -> ssl.SSLContext:
    profile = PROFILES[opts.profile]
    ctx = cls(purpose)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.maximum_version = profile.maximum
    ctx.set_ciphers(profile.ciphers)
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION
    for ca in opts.ca:
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except (ssl.SSLError, OSError):
            raise TdwiiError(
                f"CA file {ca} holds no usable PEM certificate", hint="pass the CA's .pem"
            ) from None
    if opts.crl is not None:
        try:
            ctx.load_verify_locations(cafile=str(opts.crl))
        except (ssl.SSLError, OSError):
            raise TdwiiError(f"CRL file {opts.crl} is not a PEM CRL") from None
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if opts.cert is not None and opts.key is not None:
        # servers and mTLS clients always; a --tls client only when it was given a pair
        check_own_certificate(opts.cert, opts.key, opts.key_password(), ctx)
    return ctx


def build_server_context(opts: TlsOptions) -> ssl.SSLContext:
    """Server context: server cipher preference; client certificate required for mTLS."""
    ctx = _base_context(ssl.PROTOCOL_TLS_SERVER, opts)
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    ctx.verify_mode = ssl.CERT_REQUIRED if opts.mutual else ssl.CERT_NONE
    # Selects "dicom" when offered; a client offering no ALPN (or others only) goes on without.
    ctx.set_alpn_protocols([ALPN])
    return ctx


def build_client_context(
    opts: TlsOptions, cls: type[ssl.SSLContext] = ssl.SSLContext
) -> ssl.SSLContext:
    """Client context: verify the server (and its host name unless turned off), offer ALPN."""
    ctx = _base_context(ssl.PROTOCOL_TLS_CLIENT, opts, cls)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = opts.verify_hostname
    if not opts.verify_hostname:
        log.warning("server host name check is off (--no-verify-hostname)")
    ctx.set_alpn_protocols([ALPN])
    return ctx


def check_own_certificate(
    cert_path: Path,
    key_path: Path,
    password: bytes | None,
    ctx: ssl.SSLContext | None = None,
) -> None:
    """Refuse an unusable certificate of ours before any connection; warn when it expires soon.

    Refuses (one `TdwiiError` line): expired, not yet valid, RSA < 2048 or EC < 256 bits,
    an MD5/SHA-1/SHA-224 signature, a key that is not the certificate's, a missing or wrong
    key password (never shown). The pair is then loaded into `ctx` (a throwaway context when
    None). The certificate is read with a small DER reader so that a one-shot command does
    not pay for importing `cryptography`; anything it cannot read goes the `cryptography` way.
    """
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    try:
        facts = _leaf_facts(cert_path.read_bytes())
    except (OSError, ValueError, IndexError):
        facts = None
    if facts is None:  # unusual or broken file: the full parser gives the precise words
        facts = _leaf_facts_cryptography(cert_path, key_path, password)
    not_before, not_after, weakness = facts
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
    _load_pair(ctx or ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), cert_path, key_path, password)
    days = (not_after - now).days
    if days < WARN_DAYS:
        log.warning(
            "our certificate %s expires in %d days (%s)", cert_path, days, f"{not_after:%Y-%m-%d}"
        )


class _PasswordNeeded(Exception):
    pass


def _load_pair(ctx: ssl.SSLContext, cert: Path, key: Path, password: bytes | None) -> None:
    """`load_cert_chain` with one-line errors; never prompts, never shows the password."""
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
_WEAK_SIGNATURES = {
    b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x04": "MD5",
    b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x05": "SHA1",
    b"\x2a\x86\x48\xce\x3d\x04\x01": "SHA1",
    b"\x2a\x86\x48\xce\x38\x04\x03": "SHA1",
    b"\x2a\x86\x48\x86\xf7\x0d\x01\x01\x0e": "SHA224",
    b"\x2a\x86\x48\xce\x3d\x04\x03\x01": "SHA224",
}
MIN_RSA_BITS = 2048
MIN_EC_BITS = 256


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


def _der_time(tag: int, value: bytes):  # type: ignore[no-untyped-def]
    import datetime as dt

    text = value.decode("ascii")
    if not text.endswith("Z"):
        raise ValueError("certificate time not in UTC")
    if tag == 0x17:  # UTCTime YYMMDDHHMMSSZ
        year = int(text[:2])
        text = f"{1900 + year if year >= 50 else 2000 + year}{text[2:]}"
    elif tag != 0x18:  # GeneralizedTime YYYYMMDDHHMMSSZ
        raise ValueError("not a time")
    return dt.datetime.strptime(text, "%Y%m%d%H%M%SZ").replace(tzinfo=dt.timezone.utc)


def _leaf_facts(pem: bytes):  # type: ignore[no-untyped-def]
    """(not_before, not_after, weakness or "") of the first certificate in a PEM file, or None
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
    return not_before, not_after, weakness


def _leaf_facts_cryptography(cert_path: Path, key_path: Path, password: bytes | None):  # type: ignore[no-untyped-def]
    from tdwii_cli import pki

    cert = pki.load_cert(cert_path)
    pki.load_key(key_path, password)  # its own clear errors (password, not a key)
    return cert.not_valid_before_utc, cert.not_valid_after_utc, pki.key_problem(cert) or ""


def set_nodelay(sock: socket.socket) -> None:
    """Send small DICOM PDUs at once (no Nagle delay against the peer's delayed ACK)."""
    with contextlib.suppress(OSError):  # not a TCP socket, or already closed
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


@dataclass(frozen=True)
class HandshakeFailure:
    """Why a TLS handshake failed, in plain words, and what to do about it."""

    reason: str
    hint: str

    def __str__(self) -> str:
        return f"{self.reason} ({self.hint})"


_VERIFY_CODES = {
    # X509_V_ERR_* numbers
    9: ("the peer's certificate is not yet valid", "check both clocks or reissue it"),
    10: ("the peer's certificate has expired", "issue a new one: tdwii pki issue"),
    18: ("the peer's certificate is self-signed and not trusted", "pass its CA with --ca"),
    19: (
        "the peer's certificate is from an untrusted CA (its root is not among --ca)",
        "pass the CA that issued it with --ca",
    ),
    20: ("the peer's certificate is from an untrusted CA", "pass the CA that issued it with --ca"),
    21: ("the peer's certificate is from an untrusted CA", "pass the CA that issued it with --ca"),
    23: ("the peer's certificate is revoked", "the CRL lists it; issue the peer a new one"),
    3: ("no CRL is available for the peer's CA", "pass the CA's CRL with --crl"),
    12: ("the CRL has expired", "reissue it: tdwii pki crl"),
    62: (
        "host name mismatch: the server's certificate is not for this host name",
        "connect by a name in its SANs, or --no-verify-hostname",
    ),
    64: (
        "host name mismatch: the server's certificate is not for this IP address",
        "connect by a name in its SANs, or --no-verify-hostname",
    ),
}

# OpenSSL reason strings (lower case, as in exc.reason) -> (reason, hint) for each side.
_REASONS: list[tuple[tuple[str, ...], str, str]] = [
    (
        ("peer_did_not_return_a_certificate", "certificate_required", "alert_certificate_required"),
        "no client certificate presented",
        "the server requires mutual TLS: give the client a certificate (--mtls --cert --key)",
    ),
    (
        ("tlsv1_alert_unknown_ca", "alert_unknown_ca"),
        "our certificate is from a CA the peer does not trust",
        "give the peer our CA certificate, or use a certificate from its CA",
    ),
    (
        ("sslv3_alert_bad_certificate", "alert_bad_certificate"),
        "the peer rejected our certificate",
        "check its CA, validity and key usage",
    ),
    (
        ("sslv3_alert_certificate_expired", "alert_certificate_expired"),
        "the peer says our certificate has expired",
        "issue a new one: tdwii pki issue",
    ),
    (
        ("sslv3_alert_certificate_revoked", "alert_certificate_revoked"),
        "the peer says our certificate is revoked",
        "issue a new one: tdwii pki issue",
    ),
    (
        (
            "unsupported_protocol",
            "tlsv1_alert_protocol_version",
            "alert_protocol_version",
            "no_protocols_available",
            "wrong_ssl_version",
            "version_too_low",
        ),
        "protocol version refused: the peer offers only TLS versions this profile forbids "
        "(TLS 1.0/1.1 are never allowed)",
        "upgrade the peer to TLS 1.2 or 1.3",
    ),
    (
        (
            "no_shared_cipher",
            "sslv3_alert_handshake_failure",
            "no_ciphers_available",
            "no_cipher_match",
            "no_suitable_signature_algorithm",
            "alert_handshake_failure",
        ),
        "no shared cipher suite (the peer offers none of the profile's suites)",
        "use a peer with RFC 9325 suites (ECDHE with AES-GCM) or try --tls-profile",
    ),
    (
        (
            "wrong_version_number",
            "http_request",
            "unexpected_record",
            "record_layer_failure",
            "packet_length_too_long",
            "unknown_protocol",
            "record_too_large",
        ),
        "the peer does not speak TLS here (plain DICOM to a TLS port, or TLS to a plain port)",
        "use --mtls/--tls on both sides, or neither; TLS is usually on port 2762",
    ),
    (
        ("unexpected_eof_while_reading", "eof"),
        "the connection was closed during the TLS handshake",
        "the peer refused us (our certificate or TLS version) or does not speak TLS on "
        "this port; its log says why",
    ),
]


def describe_handshake_error(exc: BaseException, *, side: str = "client") -> HandshakeFailure:
    """Plain words for a failed handshake, as seen from `side` ("server" or "client")."""
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return HandshakeFailure(
            "TLS handshake timed out", "the peer sent nothing or too little; is it a TLS peer?"
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        message = getattr(exc, "verify_message", "") or str(exc)
        if code in _VERIFY_CODES:
            reason, hint = _VERIFY_CODES[code]
            if code in (62, 64) and side == "client":
                return HandshakeFailure(f"{reason} ({message})", hint)
            return HandshakeFailure(reason, hint)
        if "hostname mismatch" in message.lower() or "ip address mismatch" in message.lower():
            reason, hint = _VERIFY_CODES[62]
            return HandshakeFailure(f"{reason} ({message})", hint)
        return HandshakeFailure(
            f"the peer's certificate failed verification: {message}",
            "check the CA (--ca) and the certificate",
        )
    text = (getattr(exc, "reason", None) or "") + " " + str(exc)
    low = text.lower()
    if isinstance(exc, ssl.SSLError):
        for keys, reason, hint in _REASONS:
            if any(k in low for k in keys):
                if keys[0] == "peer_did_not_return_a_certificate" and side == "client":
                    reason = "the server requires a client certificate and we sent none"
                    hint = "use --mtls (with --cert/--key), not --tls"
                if keys[0] == "unexpected_eof_while_reading" and side == "server":
                    hint = "the client gave up; often it does not trust our certificate"
                return HandshakeFailure(reason, hint)
        if "alert" in low:
            return HandshakeFailure(
                f"the peer aborted the handshake: {exc.reason}", "see the peer's log"
            )
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError)) or (
        isinstance(exc, OSError) and "eof" in low
    ):
        return HandshakeFailure(
            "the connection was closed during the TLS handshake",
            "the peer refused us (our certificate or TLS version) or does not speak TLS on "
            "this port; its log says why",
        )
    return HandshakeFailure(
        f"TLS handshake failed: {text.strip() or type(exc).__name__}", "run with -d for details"
    )


def handshake_error(peer: str, exc: BaseException, side: str = "client") -> TdwiiError:
    """A `TdwiiError` (exit code 63) for a failed handshake with `peer`."""
    failure = describe_handshake_error(exc, side=side)
    return TdwiiError(
        f"TLS handshake with {peer} failed: {failure.reason}",
        exitcodes.TLS_HANDSHAKE,
        hint=failure.hint,
    )
