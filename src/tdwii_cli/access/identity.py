"""Certificate identities as the AE configuration names them, and those a peer presents.

An identity is written `CN=<common name>`, `DNS:<name>`, `IP:<address>`, `URI:<uri>`
(subjectAltNames) or `SHA256:<fingerprint>` (the certificate's SHA-256, hex, colons
allowed). Each is reduced to one canonical key, so that matching a peer is a set
intersection: DNS names compare without case or a final dot, IP addresses as
addresses (`::1` is `0:0:0:0:0:0:0:1`), fingerprints without case or colons; CN and
URI compare exactly.
"""

from __future__ import annotations

import ipaddress
import re

from tdwii_cli.tls.peer import PeerIdentity

KINDS = ("CN=", "DNS:", "IP:", "URI:", "SHA256:")
_HEX64 = re.compile(r"[0-9a-f]{64}")


class IdentityError(ValueError):
    """An identity that cannot be read (the message says why, in one line)."""


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip().strip("[]")))
    except ValueError:
        raise IdentityError(f"IP:{value} is not an IP address") from None


def canonical(text: str) -> str:
    """The canonical key of identity `text` (see the module docstring); IdentityError when
    it is none of the five forms."""
    raw = text.strip()
    for prefix in KINDS:
        if raw[: len(prefix)].upper() == prefix:
            value = raw[len(prefix) :].strip()
            break
    else:
        raise IdentityError(
            f"{text!r} is not a certificate identity (CN=..., DNS:..., IP:..., URI:... or "
            "SHA256:...)"
        )
    if not value:
        raise IdentityError(f"{text!r} names nothing after {prefix}")
    if prefix == "DNS:":
        return "DNS:" + value.lower().rstrip(".")
    if prefix == "IP:":
        return "IP:" + _ip(value)
    if prefix == "SHA256:":
        digest = value.replace(":", "").replace(" ", "").lower()
        if not _HEX64.fullmatch(digest):
            raise IdentityError(f"{text!r} is not a SHA-256 fingerprint (64 hex digits)")
        return "SHA256:" + digest
    return prefix + value


def keys_of(peer: PeerIdentity) -> frozenset[str]:
    """Every canonical key the certificate of `peer` answers to (empty without one)."""
    if not peer.has_certificate:
        return frozenset()
    keys = {f"SHA256:{peer.fingerprint}"}
    if peer.subject_cn:
        keys.add(f"CN={peer.subject_cn}")
    for kind, value in peer.sans:
        if kind == "DNS":
            keys.add("DNS:" + value.lower().rstrip("."))
        elif kind == "IP":
            try:
                keys.add("IP:" + _ip(value))
            except IdentityError:
                continue
        elif kind == "URI":
            keys.add("URI:" + value)
    return frozenset(keys)


def certificate_as_peer(subject_cn: str, sans: tuple[str, ...], sha256: str) -> PeerIdentity:
    """A certificate described by `tdwii_cli.tls.certinfo` (CN, "KIND:value" SANs, hex
    fingerprint with or without colons) as the `PeerIdentity` it would be on a connection."""
    pairs = []
    for text in sans:
        kind, _, value = text.partition(":")
        if kind in ("DNS", "IP", "URI", "email") and value:
            pairs.append((kind, value))
    return PeerIdentity(
        address="",
        subject_cn=subject_cn or None,
        sans=tuple(pairs),
        fingerprint=sha256.replace(":", "").lower(),
    )
