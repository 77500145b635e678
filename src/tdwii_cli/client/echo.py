"""Verification SCU: C-ECHO over one or more associations, with round-trip times.

Built on `tdwii_cli.net` (sockets and `ssl` only), so a one-shot `tdwii echo`
imports neither pydicom nor pynetdicom nor cryptography.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from dataclasses import dataclass, field

from tdwii_cli.dicom.status import SUCCESS, format_status
from tdwii_cli.dicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE, VERIFICATION
from tdwii_cli.net.association import Association, open_association, propose
from tdwii_cli.net.dimse import C_ECHO_RQ, Command
from tdwii_cli.net.errors import Unreachable
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.options import TlsOptions

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
        return bool(self.statuses) and all(s == SUCCESS for s in self.statuses)

    def summary(self) -> dict[str, float]:
        r = self.rtts_ms
        if not r:
            return {}
        return {"min": min(r), "median": statistics.median(r), "max": max(r)}


def _echo(assoc: Association, count: int, result: EchoResult) -> None:
    context = assoc.context(VERIFICATION)
    for _ in range(count):
        request = Command(C_ECHO_RQ, message_id=assoc.next_message_id(), sop_class=VERIFICATION)
        start = time.perf_counter()
        assoc.send(request, None, context)
        status = assoc.response(request).command.status or 0
        took = (time.perf_counter() - start) * 1000
        log.info(
            "%s: C-ECHO id=%d status %s in %.1f ms",
            assoc.peer,
            request.message_id,
            format_status(status, "C-ECHO"),
            took,
        )
        result.statuses.append(status)
        result.rtts_ms.append(took)


def run_echo(
    host: str,
    port: int,
    *,
    tls: TlsOptions,
    net: ScuOptions,
    count: int = 1,
    repeat: int = 1,
    wait: float = 0.0,
) -> EchoResult:
    """`count` C-ECHOs on each of `repeat` associations; a `NetError` when one fails.

    With `wait`, a peer that is not listening yet (connection refused, `Unreachable`) is
    tried again every 0.2 s for up to `wait` seconds: a script starts a server, then waits
    for it with `tdwii echo --wait 30`. Any other failure is final at once."""
    ctx = None
    if tls.enabled:
        from tdwii_cli.tls.context import build_client_context

        ctx = build_client_context(tls)
    result = EchoResult(peer=f"{host}:{port}")
    contexts = propose([VERIFICATION], (IMPLICIT_VR_LE, EXPLICIT_VR_LE))
    deadline = time.monotonic() + wait
    while result.associations < repeat:
        with contextlib.ExitStack() as stack:
            try:
                assoc = stack.enter_context(
                    open_association(host, port, ctx, net, contexts, mutual=tls.mutual)
                )
            except Unreachable:
                left = deadline - time.monotonic()
                if result.associations or left <= 0:
                    raise
                time.sleep(min(0.2, left))
                continue
            result.associations += 1
            result.tls_version = assoc.tls_version
            result.cipher = assoc.cipher
            _echo(assoc, count, result)
    return result
