"""Peers the tests drive that nobody here wrote: pynetdicom as an SCU, with its own guard.

`keep_responses_for_the_caller(assoc)` works around a race in pynetdicom's
client: `Association.send_*()` pauses the association reactor, sends the
request and blocks on the DIMSE queue. The pause is only checked through a flag
that the reactor clears *after* it wakes, so right after one exchange the next
send may start while the reactor is still waking up; that reactor then polls the
queue (`get_msg(block=False)`) and takes a fast peer's response for an
unsolicited request, and the caller waits for its DIMSE timeout and aborts.
Here the non-blocking poll leaves responses where the waiting caller will find
them (a subclass of the association's own DIMSE provider).
"""

from __future__ import annotations

from typing import Any


def _is_response(item: Any) -> bool:
    primitive = item[1] if isinstance(item, tuple) and len(item) == 2 else None
    return primitive is not None and getattr(primitive, "Status", None) is not None


_GUARDED: dict[type, type] = {}


def keep_responses_for_the_caller(assoc: Any) -> None:
    """Make pynetdicom association `assoc` keep responses for the `send_*()` caller."""
    dimse = assoc.dimse
    base = type(dimse)
    if getattr(base, "_tdwii_guard", False):
        return
    guarded = _GUARDED.get(base)
    if guarded is None:

        class _ResponseKeepingDIMSE(base):  # type: ignore[misc,valid-type]
            _tdwii_guard = True

            def get_msg(self, block: bool = False) -> Any:
                if not block:
                    try:
                        first = self.msg_queue.queue[0]
                    except IndexError:
                        return None, None
                    if _is_response(first):
                        return None, None  # the send_*() call blocked on the queue takes it
                return super().get_msg(block)

        guarded = _GUARDED[base] = _ResponseKeepingDIMSE
    dimse.__class__ = guarded
