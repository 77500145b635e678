"""Verification SCU: C-ECHO over one or more associations, with round-trip times.

Built on `dulraw` (sockets and `ssl` only), so a one-shot `tdwii echo` does not
pay for importing pydicom and pynetdicom.
"""

from __future__ import annotations

import logging
import ssl
import statistics
import time
from dataclasses import dataclass, field

from tdwii_cli import dulraw, rawassoc
from tdwii_cli.scuoptions import ScuOptions
from tdwii_cli.tlsoptions import TlsOptions

log = logging.getLogger("tdwii.net")


@dataclass
class EchoResult:
    """What `run_echo` saw: statuses and round-trip times (ms), and the TLS session."""

    peer: str
    statuses: list[int] = field(default_factory=list)
    rtts_ms: list[float] = field(default_factory=list)
    associations: int = 0
    tls_version: str = ""
    cipher: str = ""

    @property
    def ok(self) -> bool:
        return bool(self.statuses) and all(s == 0 for s in self.statuses)

    def summary(self) -> dict[str, float]:
        r = self.rtts_ms
        if not r:
            return {}
        return {"min": min(r), "median": statistics.median(r), "max": max(r)}


def status_words(code: int) -> str:
    """`0x0000 (Success)`; other codes in pynetdicom's words (imported only then)."""
    if code == 0:
        return "0x0000 (Success)"
    from tdwii_cli.netlog import format_status

    return format_status(code)


def _one_association(
    host: str,
    port: int,
    ctx: ssl.SSLContext | None,
    net: ScuOptions,
    count: int,
    result: EchoResult,
    mutual: bool = True,
) -> None:
    with rawassoc.open_association(host, port, ctx, net, mutual=mutual) as assoc:
        result.associations += 1
        result.tls_version = assoc.tls_version
        result.cipher = assoc.cipher
        for message_id in range(1, count + 1):
            start = time.perf_counter()
            assoc.sock.sendall(dulraw.echo_rq(message_id, assoc.context_id))
            status = dulraw.echo_status(dulraw.read_command(assoc.sock))
            took = (time.perf_counter() - start) * 1000
            log.info(
                "%s: C-ECHO id=%d status %s in %.1f ms",
                assoc.peer,
                message_id,
                status_words(status),
                took,
            )
            result.statuses.append(status)
            result.rtts_ms.append(took)


def run_echo(
    host: str, port: int, *, tls: TlsOptions, net: ScuOptions, count: int = 1, repeat: int = 1
) -> EchoResult:
    """`count` C-ECHOs on each of `repeat` associations; raises `TdwiiError` on failure."""
    ctx = None
    if tls.enabled:
        from tdwii_cli import tls as tlsmod

        ctx = tlsmod.build_client_context(tls)
    result = EchoResult(peer=f"{host}:{port}")
    for _ in range(repeat):
        _one_association(host, port, ctx, net, count, result, tls.mutual)
    return result
