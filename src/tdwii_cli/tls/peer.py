"""Who is at the other end of a TLS connection: what its certificate and session say."""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PeerIdentity:
    """The peer of one connection (certificate fields None without TLS or certificate)."""

    address: str
    subject_cn: str | None = None
    subject: str | None = None
    issuer: str | None = None
    tls_version: str | None = None
    cipher: str | None = None


def _name(parts: Any) -> str:
    """RFC 4514-ish text of `ssl.getpeercert()`'s subject/issuer tuples."""
    return ",".join(f"{k}={v}" for rdn in reversed(parts or ()) for k, v in rdn)


def identity_of(sock: socket.socket, address: str) -> PeerIdentity:
    """The `PeerIdentity` of a connected socket (TLS or not) whose peer is at `address`."""
    if not isinstance(sock, ssl.SSLSocket):
        return PeerIdentity(address=address)
    info: dict[str, Any] = dict(sock.getpeercert() or {})
    cn = None
    for rdn in info.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
    cipher = sock.cipher()
    return PeerIdentity(
        address=address,
        subject_cn=cn,
        subject=_name(info.get("subject")) or None,
        issuer=_name(info.get("issuer")) or None,
        tls_version=sock.version(),
        cipher=cipher[0] if cipher else None,
    )
