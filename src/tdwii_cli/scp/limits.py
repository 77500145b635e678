"""Fair limits: connections not yet associated and associations, counted per peer host and
in total, so that one host cannot take what the others need.

A connection is *pending* from TCP accept until its A-ASSOCIATE-RQ has been read
(its TLS handshake included); an association holds a *slot* from the
A-ASSOCIATE-AC to its end. Each has a total and a per-host maximum. A host is an
IPv4 address, or an IPv6 /64 (one machine usually has a whole /64 to hop in);
an IPv4-mapped IPv6 address counts as its IPv4 address.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import Counter
from dataclasses import dataclass


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
    """The four maxima (see `serve --help`)."""

    max_pending: int = 512
    max_pending_per_host: int = 16
    max_associations: int = 10
    max_associations_per_host: int = 5


class Limits:
    """Thread-safe counters for `LimitSettings`."""

    def __init__(self, settings: LimitSettings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pending: Counter[str] = Counter()
        self._slots: Counter[str] = Counter()
        self.pending_total = 0
        self.slots_total = 0

    def admit(self, host: str) -> str:
        """Count a new connection from `host` as pending; '' if admitted, else why not."""
        s = self.settings
        with self._lock:
            if self._pending[host] >= s.max_pending_per_host:
                return f"{s.max_pending_per_host} connections from this host are not associated yet"
            if self.pending_total >= s.max_pending:
                return f"{s.max_pending} connections are not associated yet"
            self._pending[host] += 1
            self.pending_total += 1
        return ""

    def leave(self, host: str) -> None:
        """A pending connection of `host` closed or was associated."""
        with self._lock:
            self._pending[host] -= 1
            self.pending_total -= 1
            if self._pending[host] <= 0:
                del self._pending[host]

    def take_slot(self, host: str) -> bool:
        """An association slot for `host`, if one is free for it."""
        s = self.settings
        with self._lock:
            if self.slots_total >= s.max_associations:
                return False
            if self._slots[host] >= s.max_associations_per_host:
                return False
            self._slots[host] += 1
            self.slots_total += 1
        return True

    def free_slot(self, host: str) -> None:
        with self._lock:
            self._slots[host] -= 1
            self.slots_total -= 1
            if self._slots[host] <= 0:
                del self._slots[host]
