"""The worklist query (UPS C-FIND), streamed: each match handed on as it arrives, none kept.

`find(peer, query, ...)` sends one C-FIND (UPS Pull by default; Watch or Query on
request) and calls `on_match` with each `Match` as its pending response arrives; the
result only counts them, so memory stays flat however many come. After `limit`
matches, or once `interrupt` is set (the command line sets it on Ctrl-C), it sends
C-CANCEL and reads what follows until the final response (Cancel, FE00), counting
it: for up to the DIMSE timeout after a limit, `INTERRUPT_WAIT` seconds after an
interrupt. A peer that has not ended the query by then, or a `tdwii_cli.errors.
Interrupted` that comes meanwhile (see `client.interrupt`), gets an A-ABORT instead
of a release. The time is checked between responses: a peer that sends nothing is
bounded by the DIMSE timeout, or by the command line's alarm after a Ctrl-C.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tdwii_cli.client.interrupt import Interrupt
from tdwii_cli.client.statuses import judge
from tdwii_cli.client.upsclient import UpsClient, connect
from tdwii_cli.dicom import rawdataset as raw
from tdwii_cli.dicom import status as st
from tdwii_cli.dicom.uids import UPS_PULL, UPS_QUERY, UPS_WATCH
from tdwii_cli.errors import Interrupted, TdwiiError
from tdwii_cli.net.errors import DeadlineMissed
from tdwii_cli.ups.worklist import Match, WorklistQuery

if TYPE_CHECKING:
    from tdwii_cli.client.peer import Peer
    from tdwii_cli.net.association import AcceptedContext
    from tdwii_cli.net.dimse import Command

log = logging.getLogger("tdwii.ups")

SOP_CLASSES = {"pull": UPS_PULL, "watch": UPS_WATCH, "query": UPS_QUERY}
INTERRUPT_WAIT = 0.5  # seconds for the final response after a C-CANCEL on Ctrl-C


@dataclass
class FindResult:
    """How many matches, the final status, whether we cancelled, and how long it took."""

    count: int = 0  # matches handed to `on_match` (none after our C-CANCEL)
    status: int | None = None  # the final status; None when none came (aborted)
    comment: str = ""
    cancelled: bool = False  # we sent C-CANCEL (at the limit, or interrupted)
    interrupted: bool = False
    after_cancel: int = 0  # pending responses that came after our C-CANCEL
    seconds: float = 0.0

    @property
    def aborted(self) -> bool:
        """No final response came: the association was aborted."""
        return self.status is None


class _GaveUp(Exception):
    """The peer did not end the query in time after our C-CANCEL: leave by A-ABORT."""


def find(
    peer: Peer,
    query: WorklistQuery,
    *,
    sop: str = "pull",
    limit: int = 0,
    on_match: Callable[[Match], None] | None = None,
    interrupt: threading.Event | None = None,
) -> FindResult:
    """Query `peer`'s worklist (see the module docstring); `DimseFailure` on a failure."""
    sop_class = SOP_CLASSES[sop]
    identifier = query.identifier()
    result = FindResult()
    started = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            with _waiting(interrupt):  # nothing to cancel yet: Ctrl-C ends it at once
                client = stack.enter_context(connect(peer, [sop_class]))
            after_limit = peer.net.dimse_timeout  # as long as for any response
            _query(client, identifier, sop_class, result, limit, on_match, interrupt, after_limit)
    except Interrupted:
        result.interrupted = True
    except _GaveUp as exc:  # after Ctrl-C, the command line says it in its own line
        level = logging.INFO if result.interrupted else logging.WARNING
        log.log(level, "C-FIND: %s after C-CANCEL: association aborted", exc)
    result.seconds = time.perf_counter() - started
    if result.status is not None and result.status != st.CANCEL:
        judge("C-FIND", result.status, result.comment, operation="C-FIND")
    log.info(
        "C-FIND: %d match(es)%s, final status %s in %.1f ms",
        result.count,
        " (cancelled)" if result.cancelled else "",
        "none (aborted)" if result.status is None else st.format_status(result.status),
        result.seconds * 1000,
    )
    return result


def _query(
    client: UpsClient,
    identifier: bytes,
    sop_class: str,
    result: FindResult,
    limit: int,
    on_match: Callable[[Match], None] | None,
    interrupt: threading.Event | None,
    wait: float,
) -> None:
    """The C-FIND on `client`'s association, its matches to `on_match`, C-CANCEL at the
    limit or on `interrupt`; then `wait` seconds at most for the final response."""
    request, context = client.find_request(identifier, sop_class)
    try:
        while True:
            with _waiting(interrupt):
                if interrupt is not None and interrupt.is_set():
                    raise Interrupted()
                rsp = client.find_response(request, context)
            if not st.is_pending(rsp.status):
                result.status, result.comment = rsp.status, rsp.comment
                return
            result.count += 1
            if on_match is not None:
                on_match(_match(rsp.explicit()))
            if limit and result.count >= limit:
                break
    except Interrupted:
        result.interrupted = True
        wait = INTERRUPT_WAIT
    client.cancel(request, context)
    result.cancelled = True
    _drain(client, request, context, result, wait, interrupt)


def _drain(
    client: UpsClient,
    request: Command,
    context: AcceptedContext,
    result: FindResult,
    seconds: float,
    interrupt: threading.Event | None,
) -> None:
    """Count what follows our C-CANCEL until the final response; `_GaveUp` after `seconds`.
    After an interrupt, which may have cut a response short, anything that goes wrong
    reading is giving up too."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            with _waiting(interrupt):
                rsp = client.find_response(request, context, left)
        except DeadlineMissed:
            break
        except Exception as exc:
            if not result.interrupted:
                raise
            raise _GaveUp(f"no final response: {exc}") from None
        if not st.is_pending(rsp.status):
            result.status, result.comment = rsp.status, rsp.comment
            return
        result.after_cancel += 1
    raise _GaveUp(f"no final response within {seconds:g} s")


def _waiting(interrupt: threading.Event | None) -> AbstractContextManager[None]:
    """A wait on the peer that Ctrl-C ends at once (see `client.interrupt`)."""
    return interrupt.waiting() if isinstance(interrupt, Interrupt) else contextlib.nullcontext()


def _match(data: bytes | None) -> Match:
    try:
        return Match.parse(data or b"")
    except raw.RawError as exc:
        raise TdwiiError(f"C-FIND: a response that is not a data set: {exc}") from None
