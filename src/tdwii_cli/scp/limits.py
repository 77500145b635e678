"""Fair limits: connections not yet associated and associations, counted in total, per peer
host and per certificate, so that no host and no certificate can take what others need.

A connection is *pending* from TCP accept until its A-ASSOCIATE-RQ has been read
(its TLS handshake included); an association holds a *slot* from the
A-ASSOCIATE-AC to its end. Pending connections have a total and a per-host maximum;
slots a total and one maximum per host and per *holder* (the certificate's fingerprint,
or the host when there is none), so that one certificate used from many addresses
counts as one device. When a total is reached, the front end and the acceptor may give
a newcomer the place of a connection of whoever holds the most (`heaviest_*`, fair
share: only from a holder with at least two more than the newcomer). A host is an IPv4
address, or an IPv6 /64 (one machine usually has a whole /64 to hop in); an IPv4-mapped
IPv6 address counts as its IPv4 address.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import Counter
from dataclasses import dataclass
from enum import Enum


def host_key(address: str) -> str:
    """The host a peer address counts against (see the module docstring)."""
    if ":" not in address:  # IPv4 as the socket gives it: nothing to normalise
        return address
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))
    return str(ip)


@dataclass(frozen=True)
class LimitSettings:
    """The maxima (see `serve --help`): pending connections in total and per host,
    associations in total and per host (the same number per certificate)."""

    max_pending: int = 512
    max_pending_per_host: int = 16
    max_associations: int = 10
    max_associations_per_host: int = 5


class Full(Enum):
    """Which maximum a connection or association would pass."""

    NONE = ""
    TOTAL = "total"
    HOST = "host"
    HOLDER = "certificate"


class Limits:
    """Thread-safe counters for `LimitSettings`."""

    def __init__(self, settings: LimitSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._slots: Counter[str] = Counter()  # per host
        self._held: Counter[str] = Counter()  # per holder
        self.pending_total = 0
        self.slots_total = 0

    # -- pending connections -------------------------------------------------------------

    def admit(self, host: str) -> Full:
        """Count a new connection from `host` as pending (`Full.NONE`), or say which maximum
        it would pass."""
        s = self.settings
        with self._lock:
            if self._pending[host] >= s.max_pending_per_host:
                return Full.HOST
            if self.pending_total >= s.max_pending:
                return Full.TOTAL
            self._pending[host] += 1
            self.pending_total += 1
        return Full.NONE

    def leave(self, host: str) -> None:
        """A pending connection of `host` closed or was associated."""
        with self._lock:
            self._pending[host] -= 1
            self.pending_total -= 1
            if self._pending[host] <= 0:
                del self._pending[host]

    def heaviest_pending(self, newcomer: str) -> str | None:
        """The host with the most pending connections, if it has at least two more than
        `newcomer` (whose place it may give up), else None."""
        with self._lock:
            top = self._pending.most_common(1)
            mine = self._pending[newcomer]  # a Counter adds no key for this
        if top and top[0][1] >= mine + 2:
            return top[0][0]
        return None

    def refusal_words(self, full: Full) -> str:
        s = self.settings
        if full is Full.HOST:
            return f"{s.max_pending_per_host} connections from this host are not associated yet"
        return f"{s.max_pending} connections are not associated yet"

    # -- association slots ---------------------------------------------------------------

    def take_slot(self, host: str, holder: str) -> Full:
        """A slot for an association of `holder` from `host` (`Full.NONE`), or which
        maximum it would pass."""
        s = self.settings
        with self._lock:
            if self._slots[host] >= s.max_associations_per_host:
                return Full.HOST
            if self._held[holder] >= s.max_associations_per_host:
                return Full.HOLDER
            if self.slots_total >= s.max_associations:
                return Full.TOTAL
            self._slots[host] += 1
            self._held[holder] += 1
            self.slots_total += 1
        return Full.NONE

    def free_slot(self, host: str, holder: str) -> None:
        with self._lock:
            self._slots[host] -= 1
            self._held[holder] -= 1
            self.slots_total -= 1
            if self._slots[host] <= 0:
                del self._slots[host]
            if self._held[holder] <= 0:
                del self._held[holder]

    def held(self, holder: str) -> int:
        """The slots `holder` has."""
        with self._lock:
            return self._held.get(holder, 0)
