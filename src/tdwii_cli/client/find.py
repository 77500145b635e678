"""The worklist query (UPS C-FIND): matches as they stream, C-CANCEL at a limit or on request.

`find(peer, query, ...)` sends one C-FIND (UPS Pull by default; Watch or Query on
request) and calls `on_match` with each `Match` as its pending response arrives.
After `limit` matches, or once `interrupt` is set (the command line sets it on
Ctrl-C), it sends C-CANCEL and reads the responses until the final one (Cancel,
FE00); matches after the cancel are counted, not kept.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tdwii_cli.client.statuses import judge
from tdwii_cli.client.upsclient import connect
from tdwii_cli.dicom import rawdataset as raw
from tdwii_cli.dicom import status as st
from tdwii_cli.dicom.uids import UPS_PULL, UPS_QUERY, UPS_WATCH
from tdwii_cli.errors import TdwiiError
from tdwii_cli.ups.worklist import Match, WorklistQuery

if TYPE_CHECKING:
    from tdwii_cli.client.peer import Peer

log = logging.getLogger("tdwii.ups")

SOP_CLASSES = {"pull": UPS_PULL, "watch": UPS_WATCH, "query": UPS_QUERY}


@dataclass
class FindResult:
    """The matches kept, the final status, whether we cancelled, and how long it took."""

    matches: list[Match] = field(default_factory=list)
    status: int = st.SUCCESS
    comment: str = ""
    cancelled: bool = False  # we sent C-CANCEL (at the limit, or interrupted)
    interrupted: bool = False
    after_cancel: int = 0  # pending responses that came after our C-CANCEL
    seconds: float = 0.0


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
    with connect(peer, [sop_class]) as client:
        for request, context, rsp in client.find(identifier, sop_class):
            if not st.is_pending(rsp.status):
                result.status, result.comment = rsp.status, rsp.comment
                break
            if result.cancelled:
                result.after_cancel += 1
                continue
            result.matches.append(_match(rsp.explicit()))
            if on_match is not None:
                on_match(result.matches[-1])
            stop = bool(limit and len(result.matches) >= limit)
            if interrupt is not None and interrupt.is_set():
                stop = result.interrupted = True
            if stop:
                client.cancel(request, context)
                result.cancelled = True
    result.seconds = time.perf_counter() - started
    if result.status != st.CANCEL:
        judge("C-FIND", result.status, result.comment, operation="C-FIND")
    log.info(
        "C-FIND: %d match(es)%s, final status %s in %.1f ms",
        len(result.matches),
        " (cancelled)" if result.cancelled else "",
        st.format_status(result.status),
        result.seconds * 1000,
    )
    return result


def _match(data: bytes | None) -> Match:
    try:
        return Match.parse(data or b"")
    except raw.RawError as exc:
        raise TdwiiError(f"C-FIND: a response that is not a data set: {exc}") from None
