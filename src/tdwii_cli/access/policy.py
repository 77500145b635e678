"""The access policy of one worklist manager: which certificate may call as which AE title,
with which roles, built once from the AE configuration (and rebuilt when it is reread).

`AccessPolicy.titles_for(peer)` is every AE title the peer's certificate is bound to;
`admits(calling, peer)` whether it may associate as `calling`; `principal(calling, peer)`
the `Principal` that `roles.decide()` judges. An entry without `Certificates` matches no
certificate.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from tdwii_cli.access.aefile import KnownAE
from tdwii_cli.access.identity import canonical, keys_of
from tdwii_cli.access.roles import Principal
from tdwii_cli.tls.peer import PeerIdentity

_CACHED = 1024  # peers whose AE titles are kept (a new policy starts afresh)


@dataclass(frozen=True)
class Binding:
    """One row of the policy, for display: an AE title, the identities bound, its roles."""

    ae_title: str
    identities: tuple[str, ...]
    roles: str


class AccessPolicy:
    """See the module docstring."""

    def __init__(self, entries: Mapping[str, KnownAE]) -> None:
        self.entries = dict(entries)
        self._titles: dict[str, frozenset[str]] = {}
        self._by_key: dict[str, set[str]] = {}
        for entry in self.entries.values():
            for key in entry.certificates:
                self._by_key.setdefault(key, set()).add(entry.ae_title)

    def titles_for(self, peer: PeerIdentity | None) -> frozenset[str]:
        """The AE titles the certificate of `peer` is bound to (none without one); kept per
        certificate, since an association asks for each of its requests."""
        if peer is None or peer.fingerprint is None:
            return frozenset()
        known = self._titles.get(peer.fingerprint)  # the fingerprint names the certificate
        if known is not None:
            return known
        titles: set[str] = set()
        for key in keys_of(peer):
            titles |= self._by_key.get(key, set())
        found = frozenset(titles)
        if len(self._titles) >= _CACHED:
            self._titles.clear()
        self._titles[peer.fingerprint] = found
        return found

    def admits(self, calling_ae: str, peer: PeerIdentity | None) -> bool:
        """May the holder of `peer`'s certificate call as `calling_ae`?"""
        return calling_ae in self.titles_for(peer)

    def principal(self, calling_ae: str, peer: PeerIdentity | None) -> Principal:
        """Who `calling_ae` with `peer`'s certificate is: its roles only when the certificate
        is bound to that AE title."""
        titles = self.titles_for(peer)
        entry = self.entries.get(calling_ae)
        roles = entry.roles if entry is not None and calling_ae in titles else frozenset()
        return Principal(ae_title=calling_ae, roles=roles, titles=titles)

    def bindings(self) -> list[Binding]:
        """Every entry in AE title order, for `serve -v` and `pki show`."""
        return [
            Binding(e.ae_title, e.identities, e.roles_words)
            for e in sorted(self.entries.values(), key=lambda e: e.ae_title)
        ]

    def entries_for(self, peer: PeerIdentity) -> list[tuple[KnownAE, list[str]]]:
        """The entries `peer`'s certificate matches, each with the identities that match."""
        keys = keys_of(peer)
        out = []
        for entry in sorted(self.entries.values(), key=lambda e: e.ae_title):
            matching = [text for text in entry.identities if canonical(text) in keys]
            if matching:
                out.append((entry, matching))
        return out
