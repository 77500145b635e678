"""Warnings that a flood would repeat, summarized: the first from each network in full, the
rest counted and told once per interval.

`FloodLog(logger).warning(what, address, message, *args)` logs `message` the first time
`what` happens from `address`'s network (an IPv4 /24, an IPv6 /64) in the current interval
(10 s), and counts the rest; when the interval is over (on the next call or `tick()`)
each count becomes one line: "312 connections from 127.0.4.0/24 closed before their
handshake in the last 10 s". At most `MAX_NETWORKS` networks per kind of event get
lines of their own in an interval; the others are told in one line together. So a flood
costs a bounded number of lines, at every level below DEBUG; at DEBUG (`-d`) every
warning is logged as it happens. A server's loop calls `tick_all()` now and then, so that
the counts of a flood that has stopped are told too.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

MAX_NETWORKS = 8  # networks per kind of event with lines of their own, per interval
_interval = 10.0  # seconds, for every flood log of the process (`configure`)


def configure(interval: float) -> None:
    """How often every flood log tells its counts (seconds); 0 logs every warning."""
    global _interval
    _interval = interval


def network_of(address: str) -> str:
    """The network a peer address is summarized under: its /24 (IPv4) or /64 (IPv6)."""
    host = address
    if host.startswith("["):  # "[v6]:port"
        host = host[1 : host.find("]")]
    elif host.count(":") == 1:  # "v4:port"
        host = host.rsplit(":", 1)[0]
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


@dataclass
class _Count:
    logged: int = 0
    more: int = 0


class FloodLog:
    """See the module docstring. Thread-safe."""

    def __init__(
        self,
        logger: logging.Logger,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = logger
        self._own_interval = interval  # None: the process's (`configure`)
        self._clock = clock
        self._lock = threading.Lock()
        self._start = clock()
        self._counts: dict[tuple[str, str], _Count] = {}  # (what, network)
        self._others: dict[str, tuple[int, set[str]]] = {}  # what -> (events, networks)
        _ALL.add(self)

    def warning(self, what: str, address: str, message: str, *args: object) -> None:
        """`message % args` as a warning, unless `what` from `address`'s network was told
        already in this interval (then it is counted). `what` completes "N connections from
        NETWORK ...", e.g. "closed before their TLS handshake"."""
        if self.interval <= 0 or self.log.isEnabledFor(logging.DEBUG):
            self.log.warning(message, *args)
            return
        network = network_of(address)
        with self._lock:
            summary = self._roll(self._clock())
            count = self._counts.get((what, network))
            if count is None:
                told = sum(1 for w, _ in self._counts if w == what)
                if told >= MAX_NETWORKS:
                    events, networks = self._others.get(what, (0, set()))
                    if len(networks) < 1 << 16:
                        networks.add(network)
                    self._others[what] = (events + 1, networks)
                    message = ""
                else:
                    self._counts[(what, network)] = _Count(logged=1)
            else:
                count.more += 1
                message = ""
        self._emit(summary)
        if message:
            self.log.warning(message, *args)

    @property
    def interval(self) -> float:
        return _interval if self._own_interval is None else self._own_interval

    def tick(self) -> None:
        """Tell the counts of an interval that is over (call now and then)."""
        with self._lock:
            summary = self._roll(self._clock())
        self._emit(summary)

    def _roll(self, now: float) -> list[str]:
        if now - self._start < self.interval:
            return []
        lines = [
            f"{count.more} more connection{'s' if count.more != 1 else ''} from {network} "
            f"{what} in the last {self.interval:g} s"
            for (what, network), count in self._counts.items()
            if count.more
        ]
        for what, (events, networks) in self._others.items():
            lines.append(
                f"{events} connection{'s' if events != 1 else ''} from {len(networks)} other "
                f"network{'s' if len(networks) != 1 else ''} {what} in the last "
                f"{self.interval:g} s"
            )
        self._start = now
        self._counts.clear()
        self._others.clear()
        return lines

    def _emit(self, lines: list[str]) -> None:
        for line in lines:
            self.log.warning("%s", line)


_ALL: weakref.WeakSet[FloodLog] = weakref.WeakSet()


def tick_all() -> None:
    """`tick()` every flood log of this process."""
    for flood in list(_ALL):
        flood.tick()
