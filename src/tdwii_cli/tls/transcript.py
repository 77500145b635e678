"""What a TLS client said in its handshake, kept on the server's socket for the log.

Python's `ssl` cannot show a refused client's certificate or its ClientHello: a failed
verification leaves `getpeercert()` empty. `record(ctx)` installs OpenSSL's message
callback (the private `_msg_callback` hook of `ssl`, raw, without its enum wrapper) to
keep the ClientHello and the client's Certificate message (decrypted in TLS 1.3) on the
socket; `client_hello()` and `peer_certificate()` read them back only when a line needs
them. Where the hook is missing, nothing is recorded and the log says less.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_HANDSHAKE = 22
_CLIENT_HELLO = 1
_CERTIFICATE = 11
_SUPPORTED_VERSIONS = 43
TLS13 = 0x0304
VERSION_NAMES = {0x0300: "SSL 3", 0x0301: "TLS 1.0", 0x0302: "TLS 1.1", 0x0303: "TLS 1.2"}
VERSION_NAMES[TLS13] = "TLS 1.3"


def _record(
    conn: Any, direction: str, version: int, content_type: int, msg_type: int, data: bytes
) -> None:
    if content_type != _HANDSHAKE or direction != "read":
        return
    if msg_type == _CLIENT_HELLO:
        conn._tdwii_hello = data
    elif msg_type == _CERTIFICATE:
        conn._tdwii_certificate = (version, data)


def record(ctx: ssl.SSLContext) -> None:
    """Keep the peer's ClientHello and Certificate message on each socket of `ctx`."""
    base = getattr(ssl, "_SSLContext", None)  # the C context, under ssl's enum wrapper
    setter: Callable[[ssl.SSLContext, Any], None] | None = getattr(
        getattr(base, "_msg_callback", None), "__set__", None
    )
    if setter is not None:
        setter(ctx, _record)


@dataclass(frozen=True)
class Hello:
    """A ClientHello in short: the TLS versions and the cipher suite ids it offers."""

    versions: tuple[int, ...]
    ciphers: tuple[int, ...]

    @property
    def version_words(self) -> str:
        """'TLS 1.3 only', 'TLS 1.2 and TLS 1.3', ... (GREASE values left out)."""
        names = [VERSION_NAMES[v] for v in sorted(set(self.versions)) if v in VERSION_NAMES]
        if not names:
            return "no TLS version we know"
        return f"{names[0]} only" if len(names) == 1 else " and ".join(names)


def _u(data: bytes, pos: int, size: int) -> int:
    if pos + size > len(data):
        raise ValueError("truncated handshake message")
    return int.from_bytes(data[pos : pos + size], "big")


def _parse_hello(data: bytes) -> Hello:
    pos = 4 + 2 + 32  # handshake header, legacy_version, random
    legacy = _u(data, 4, 2)
    pos += 1 + _u(data, pos, 1)  # session id
    count = _u(data, pos, 2)
    ciphers = tuple(_u(data, pos + 2 + i, 2) for i in range(0, count, 2))
    pos += 2 + count
    pos += 1 + _u(data, pos, 1)  # compression methods
    versions: tuple[int, ...] = (legacy,)
    if pos + 2 <= len(data):
        end = pos + 2 + _u(data, pos, 2)
        pos += 2
        while pos + 4 <= end:
            kind, size = _u(data, pos, 2), _u(data, pos + 2, 2)
            if kind == _SUPPORTED_VERSIONS:
                listed = _u(data, pos + 4, 1)
                versions = tuple(_u(data, pos + 5 + i, 2) for i in range(0, listed, 2))
            pos += 4 + size
    return Hello(versions, ciphers)


def client_hello(sock: object) -> Hello | None:
    """The ClientHello recorded on `sock` (None when nothing was recorded or it is broken)."""
    data = getattr(sock, "_tdwii_hello", None)
    if not data:
        return None
    try:
        return _parse_hello(data)
    except ValueError:
        return None


def peer_certificate(sock: object) -> bytes | None:
    """The DER of the peer's own certificate, from the Certificate message on `sock`."""
    recorded = getattr(sock, "_tdwii_certificate", None)
    if not recorded:
        return None
    version, data = recorded
    try:
        pos = 4  # handshake header
        if version == TLS13:
            pos += 1 + _u(data, pos, 1)  # certificate_request_context
        if _u(data, pos, 3) == 0:  # an empty list: no certificate
            return None
        size = _u(data, pos + 3, 3)
        start = pos + 6
        if start + size > len(data):
            return None
        return bytes(data[start : start + size])
    except ValueError:
        return None


def peer_subject_cn(sock: object) -> str | None:
    """The common name of the certificate the peer presented (even one we refused)."""
    der = peer_certificate(sock)
    if der is None:
        return None
    try:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        names = x509.load_der_x509_certificate(der).subject.get_attributes_for_oid(
            NameOID.COMMON_NAME
        )
    except ValueError:
        return None
    return str(names[0].value) if names else None
