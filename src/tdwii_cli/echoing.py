"""Verification SCU: C-ECHO over one or more associations, with round-trip times."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

from tdwii_cli import exitcodes
from tdwii_cli.errors import TdwiiError
from tdwii_cli.scuoptions import ScuOptions
from tdwii_cli.tlsoptions import TlsOptions

VERIFICATION = "1.2.840.10008.1.1"


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


def run_echo(
    host: str, port: int, *, tls: TlsOptions, net: ScuOptions, count: int = 1, repeat: int = 1
) -> EchoResult:
    """`count` C-ECHOs on each of `repeat` associations; raises `TdwiiError` on failure."""
    from tdwii_cli import scu

    result = EchoResult(peer=f"{host}:{port}")
    for _ in range(repeat):
        assoc = scu.associate(
            host,
            port,
            tls=tls,
            calling_aet=net.calling_aet,
            called_aet=net.called_aet,
            contexts=[VERIFICATION],
            acse_timeout=net.acse_timeout,
            dimse_timeout=net.dimse_timeout,
            network_timeout=net.network_timeout,
            connect_timeout=net.connect_timeout,
        )
        result.associations += 1
        sock = assoc.dul.socket.socket if assoc.dul.socket else None
        if sock is not None and hasattr(sock, "version"):
            result.tls_version = sock.version() or ""
            result.cipher = (sock.cipher() or ("",))[0]
        try:
            for _ in range(count):
                start = time.perf_counter()
                status = assoc.send_c_echo()
                took = (time.perf_counter() - start) * 1000
                code = int(status.Status) if status is not None and "Status" in status else None
                if code is None:
                    # No answer within -td, or the peer went away: never wait silently.
                    raise TdwiiError(
                        f"no C-ECHO response from {result.peer} within {net.dimse_timeout:g} s"
                        if assoc.is_established
                        else f"{result.peer} aborted the association",
                        exitcodes.ASSOC_ABORTED,
                        hint="see the peer's log; raise -td if slow",
                    )
                result.statuses.append(code)
                result.rtts_ms.append(took)
        finally:
            if assoc.is_established:
                assoc.release()
    return result
