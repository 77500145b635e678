"""Who is at the other end of a TLS connection: what its certificate and session say.

Everything here comes from `ssl.SSLSocket.getpeercert()` (and the certificate's bytes for
its SHA-256 fingerprint), so naming a peer costs no `cryptography` import.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
from dataclasses import dataclass
from typing import Any

# getpeercert()'s names for the subjectAltName kinds, and ours (RFC 5280 GeneralName)
_SAN_KINDS = {"DNS": "DNS", "IP Address": "IP", "URI": "URI", "email": "email"}


@dataclass(frozen=True)
class PeerIdentity:
    """The peer of one connection (certificate fields None without TLS or certificate).

    `sans` holds the subjectAltNames as (kind, value) with kind "DNS", "IP", "URI" or
    "email"; `fingerprint` is the SHA-256 of the certificate (lower-case hex); `expires`
    its notAfter; `serial` its serial number.
    """

    address: str
    subject_cn: str | None = None
    subject: str | None = None
    issuer: str | None = None
    tls_version: str | None = None
    cipher: str | None = None
    sans: tuple[tuple[str, str], ...] = ()
    fingerprint: str | None = None
    serial: int | None = None
    expires: str | None = None  # notAfter as getpeercert() gives it (see `not_after`)

    @property
    def host(self) -> str:
        """The peer's address without the port ('[::1]:5000' -> '::1')."""
        text = self.address
        if text.startswith("["):
            return text[1 : text.find("]")] if "]" in text else text
        return text.rsplit(":", 1)[0] if text.count(":") == 1 else text

    @property
    def has_certificate(self) -> bool:
        return self.fingerprint is not None

    @property
    def not_after(self) -> float | None:
        """When the certificate expires (seconds since the epoch): parsed only when asked,
        since most connections never ask."""
        if self.expires is None:
            return None
        try:
            return float(ssl.cert_time_to_seconds(self.expires))
        except ValueError:
            return None


# RFC 4514's short names for the attributes getpeercert() spells out
_SHORT = {
    "commonName": "CN",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "countryName": "C",
    "stateOrProvinceName": "ST",
    "localityName": "L",
    "streetAddress": "STREET",
    "domainComponent": "DC",
    "userId": "UID",
}


def _name(parts: Any) -> str:
    """RFC 4514 text (most specific first, short names) of getpeercert()'s subject/issuer."""
    return ",".join(f"{_SHORT.get(k, k)}={v}" for rdn in reversed(parts or ()) for k, v in rdn)


def _sans(info: dict[str, Any]) -> tuple[tuple[str, str], ...]:
    out = []
    for kind, value in info.get("subjectAltName", ()):
        name = _SAN_KINDS.get(kind)
        if name is not None:
            out.append((name, str(value).strip()))
    return tuple(out)


def identity_of(sock: socket.socket, address: str) -> PeerIdentity:
    """The `PeerIdentity` of a connected socket (TLS or not) whose peer is at `address`."""
    if not isinstance(sock, ssl.SSLSocket):
        return PeerIdentity(address=address)
    der = sock.getpeercert(binary_form=True)
    cipher = sock.cipher()
    common = dict(address=address, tls_version=sock.version(), cipher=cipher[0] if cipher else None)
    if not der:
        return PeerIdentity(**common)  # type: ignore[arg-type]
    return PeerIdentity(**common, **_certificate_facts(der, sock))  # type: ignore[arg-type]


_FACTS: dict[bytes, dict[str, Any]] = {}  # devices reconnect with the same certificate


def _certificate_facts(der: bytes, sock: ssl.SSLSocket) -> dict[str, Any]:
    """What `PeerIdentity` keeps of the certificate `der` (read from `sock` once per
    certificate: `getpeercert()` builds its dictionary anew each time)."""
    facts = _FACTS.get(der)
    if facts is not None:
        return facts
    info: dict[str, Any] = dict(sock.getpeercert() or {})
    cn = None
    for rdn in info.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
    serial = None
    if info.get("serialNumber"):
        try:
            serial = int(str(info["serialNumber"]), 16)
        except ValueError:
            serial = None
    facts = {
        "subject_cn": cn,
        "subject": _name(info.get("subject")) or None,
        "issuer": _name(info.get("issuer")) or None,
        "sans": _sans(info),
        "fingerprint": hashlib.sha256(der).hexdigest(),
        "serial": serial,
        "expires": str(info["notAfter"]) if info.get("notAfter") else None,
    }
    if len(_FACTS) >= 1024:
        _FACTS.clear()
    _FACTS[der] = facts
    return facts
