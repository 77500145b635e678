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
    if opts.needs_own_certificate:
        assert opts.cert is not None and opts.key is not None
        password = opts.key_password()
        check_own_certificate(opts.cert, opts.key, password)
        try:
            ctx.load_cert_chain(str(opts.cert), str(opts.key), password=password or None)
        except ssl.SSLError as exc:
            raise TdwiiError(
                f"cannot use certificate {opts.cert} with key {opts.key}: {exc.reason or exc}"
            ) from None
    elif opts.cert is not None and opts.key is not None:
        check_own_certificate(opts.cert, opts.key, opts.key_password())
        ctx.load_cert_chain(str(opts.cert), str(opts.key), password=opts.key_password() or None)
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


def check_own_certificate(cert_path: Path, key_path: Path, password: bytes | None) -> None:
    """Refuse an unusable certificate of ours before any connection; warn when it expires soon."""
    import datetime as dt

    from tdwii_cli import pki
    from tdwii_cli.certinfo import cert_info

    cert = pki.load_cert(cert_path)
    key = pki.load_key(key_path, password)
    info = cert_info(cert)
    now = dt.datetime.now(dt.timezone.utc)
    if cert.not_valid_before_utc > now:
        raise TdwiiError(
            f"our certificate {cert_path} is not valid before {info.not_before:%Y-%m-%d %H:%M} UTC",
            hint="check this machine's clock or issue a new one",
        )
    if cert.not_valid_after_utc < now:
        raise TdwiiError(
            f"our certificate {cert_path} expired on {info.not_after:%Y-%m-%d}",
            hint="issue a new one: tdwii pki issue",
        )
    problem = pki.key_problem(cert)
    if problem:
        raise TdwiiError(f"our certificate {cert_path} is too weak: {problem}")
    if not pki.key_matches(key, cert):
        raise TdwiiError(
            f"private key {key_path} does not belong to certificate {cert_path}",
            hint="pass the key made with that certificate",
        )
    days = info.days_left(now)
    if days < WARN_DAYS:
        log.warning(
            "our certificate %s expires in %d days (%s)",
            cert_path,
            days,
            f"{info.not_after:%Y-%m-%d}",
        )


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
