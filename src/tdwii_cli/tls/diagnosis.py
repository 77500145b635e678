"""Why a TLS handshake failed, in plain words, as seen from the side that saw it.

`describe_handshake_error(exc, side=...)` turns an `ssl`/socket error into a
`HandshakeFailure`: a stable `cause` key, the `reason` in plain words and neutral
`advice` (what to change, without naming any command-line option: the command
line adds its own hints by `cause`, see `tdwii_cli.cli.hints`).
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from tdwii_cli.tls.transcript import Hello

Side = Literal["client", "server"]


@dataclass(frozen=True)
class HandshakeFailure:
    """Why a TLS handshake failed: a `cause` key, the reason, and advice in plain words."""

    cause: str
    reason: str
    advice: str

    def __str__(self) -> str:
        return f"{self.reason} ({self.advice})"


_CLOSED = (
    "the connection was closed during the TLS handshake",
    "the peer refused us (our certificate or TLS version) or does not speak TLS on this "
    "port; its log says why",
)

# Certificate verification failures: X509_V_ERR_* number -> cause
_VERIFY_CAUSES = {
    9: "not-yet-valid",
    10: "expired",
    18: "self-signed",
    19: "untrusted-root",
    20: "untrusted-ca",
    21: "untrusted-ca",
    23: "revoked",
    3: "no-crl",
    12: "crl-expired",
    62: "hostname-mismatch",
    64: "ip-mismatch",
}
_UNTRUSTED = "the peer's certificate is from an untrusted CA"
_MISMATCH = "host name mismatch: the server's certificate is not for this"
# cause -> (reason, advice)
_VERIFY_WORDS = {
    "not-yet-valid": ("the peer's certificate is not yet valid", "check both clocks or reissue it"),
    "expired": ("the peer's certificate has expired", "issue a new one: tdwii pki issue"),
    "self-signed": ("the peer's certificate is self-signed and not trusted", "trust its CA"),
    "untrusted-root": (f"{_UNTRUSTED} (its chain ends at a root we do not trust)", "trust the CA"),
    "untrusted-ca": (_UNTRUSTED, "trust the CA that issued it"),
    "revoked": ("the peer's certificate is revoked", "the CRL lists it; issue the peer a new one"),
    "no-crl": ("no CRL is available for the peer's CA", "give the CA's CRL"),
    "crl-expired": ("the CRL has expired", "reissue it: tdwii pki crl"),
    "hostname-mismatch": (f"{_MISMATCH} host name", "connect by a name in its SANs"),
    "ip-mismatch": (f"{_MISMATCH} IP address", "connect by a name in its SANs"),
}

# OpenSSL reason strings (lower case, as in exc.reason) -> (cause, reason, advice)
_REASONS: list[tuple[tuple[str, ...], str, str, str]] = [
    (
        ("peer_did_not_return_a_certificate", "certificate_required", "alert_certificate_required"),
        "no-client-certificate",
        "no client certificate presented",
        "the server requires mutual TLS: the client must present a certificate",
    ),
    (
        ("tlsv1_alert_unknown_ca", "alert_unknown_ca"),
        "unknown-ca",
        "our certificate is from a CA the peer does not trust",
        "give the peer our CA certificate, or use a certificate from its CA",
    ),
    (
        ("sslv3_alert_bad_certificate", "alert_bad_certificate"),
        "bad-certificate",
        "the peer rejected our certificate",
        "check its CA, validity and key usage",
    ),
    (
        ("sslv3_alert_certificate_expired", "alert_certificate_expired"),
        "our-certificate-expired",
        "the peer says our certificate has expired",
        "issue a new one: tdwii pki issue",
    ),
    (
        ("sslv3_alert_certificate_revoked", "alert_certificate_revoked"),
        "our-certificate-revoked",
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
        "protocol-version",
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
        "no-shared-cipher",
        "no shared cipher suite (the peer offers none of the profile's suites)",
        "the peer needs RFC 9325 suites (ECDHE with AES-GCM), or use another TLS profile",
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
        "not-tls",
        "the peer does not speak TLS here (plain DICOM to a TLS port, or TLS to a plain port)",
        "use TLS on both sides, or neither; TLS is usually on port 2762",
    ),
    (("unexpected_eof_while_reading", "eof"), "closed", *_CLOSED),
]


def describe_handshake_error(
    exc: BaseException,
    *,
    side: Side = "client",
    context: ssl.SSLContext | None = None,
    hello: Hello | None = None,
) -> HandshakeFailure:
    """Plain words for a failed handshake, as seen from `side`; with our `context` (a
    `tdwii_cli.tls.context.Context`) and the peer's `hello` (servers only) the words name
    the versions, suites and key types of both sides where they explain the failure."""
    failure = _describe(exc, side)
    if context is not None:
        from tdwii_cli.tls.explain import refine

        return refine(failure, side, context, hello)
    return failure


def _describe(exc: BaseException, side: Side) -> HandshakeFailure:
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return HandshakeFailure(
            "timeout",
            "TLS handshake timed out",
            "the peer sent nothing or too little; is it a TLS peer?",
        )
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = getattr(exc, "verify_code", None)
        message = getattr(exc, "verify_message", "") or str(exc)
        cause = _VERIFY_CAUSES.get(code or 0)
        if cause is None and (
            "hostname mismatch" in message.lower() or "ip address mismatch" in message.lower()
        ):
            cause = "hostname-mismatch"
        if cause is not None:
            reason, advice = _VERIFY_WORDS[cause]
            if cause.endswith("-mismatch"):
                cause = "hostname-mismatch"
                if side == "client" or code not in _VERIFY_CAUSES:
                    reason = f"{reason} ({message})"
            return HandshakeFailure(cause, reason, advice)
        return HandshakeFailure(
            "verify-failed",
            f"the peer's certificate failed verification: {message}",
            "check the trusted CAs and the certificate",
        )
    text = (getattr(exc, "reason", None) or "") + " " + str(exc)
    low = text.lower()
    if isinstance(exc, ssl.SSLError):
        for keys, cause, reason, advice in _REASONS:
            if any(k in low for k in keys):
                if cause == "no-client-certificate" and side == "client":
                    reason = "the server requires a client certificate and we sent none"
                    advice = "present a client certificate (mutual TLS)"
                if cause == "closed" and side == "server":
                    advice = "the client gave up; often it does not trust our certificate"
                return HandshakeFailure(cause, reason, advice)
        if "alert" in low:
            return HandshakeFailure(
                "alert", f"the peer aborted the handshake: {exc.reason}", "see the peer's log"
            )
    if isinstance(exc, (ConnectionResetError, BrokenPipeError, ssl.SSLEOFError)) or (
        isinstance(exc, OSError) and "eof" in low
    ):
        return HandshakeFailure("closed", *_CLOSED)
    return HandshakeFailure(
        "unknown",
        f"TLS handshake failed: {text.strip() or type(exc).__name__}",
        "the debug log has the details",
    )
