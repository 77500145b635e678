"""The pynetdicom internals tdwii tunes, in one place: event-driven association threads.

pynetdicom runs two threads per association: the DUL reactor (socket <-> PDUs)
sleeps 1 ms whenever it finds nothing to do, and the association reactor
(DIMSE messages, release, abort) sleeps 1 ms per loop and polls its queues.
Each request/response therefore waits for several of those naps, and so does
association set-up. `tune_association` keeps
pynetdicom's loops and state machine as they are and only changes what they
wait on: the DUL blocks in select() on its socket plus a wake-up fd that every
outgoing primitive signals, and the association reactor blocks on an event
that incoming DIMSE messages, ACSE primitives and its checkpoint signal. Idle
associations cost no CPU; both loops still wake every IDLE_WAIT seconds for
their timers (ARTIM, network idle timeout, kill flags).

What it relies on, checked with pynetdicom 3.0: `DULServiceProvider` with
`_is_transport_event`, `_kill_thread`, `event_queue`, `to_provider_queue`,
`to_user_queue`, `_run_loop_delay`, `socket.socket`, `state_machine.current_state`,
`kill_dul` and `stop_dul`; `Association.dimse.msg_queue`, `_reactor_checkpoint`
and the module-level `time` of `pynetdicom.association`.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any

from pynetdicom.dul import DULServiceProvider

IDLE_WAIT = 0.05


class _Waker:
    """A file descriptor that select() sees readable after `wake()` (eventfd or a pipe)."""

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.read_fd, self.write_fd = fd, fd
        else:  # pragma: no cover - non-Linux
            self.read_fd, self.write_fd = os.pipe()
            os.set_blocking(self.read_fd, False)
            os.set_blocking(self.write_fd, False)

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.write_fd, b"\x01\0\0\0\0\0\0\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            os.read(self.read_fd, 4096)

    @staticmethod
    def close_fds(read_fd: int, write_fd: int) -> None:
        for fd in {read_fd, write_fd}:
            with contextlib.suppress(OSError):
                os.close(fd)


class _WakingQueue(queue.Queue[Any]):
    """A queue that calls `on_put()` after every put (under the queue's own lock)."""

    def __init__(self, on_put: Callable[[], None]) -> None:
        super().__init__()
        self._on_put = on_put

    def _put(self, item: Any) -> None:
        super()._put(item)
        self._on_put()


class _DimseQueue(_WakingQueue):
    """The DIMSE message queue: a non-blocking get() first waits (briefly) for activity."""

    def __init__(self, activity: threading.Event) -> None:
        super().__init__(activity.set)
        self._activity = activity

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block and not self._qsize():
            self._activity.wait(IDLE_WAIT)
            self._activity.clear()
        return super().get(block, timeout)


class _Checkpoint(threading.Event):
    """The association reactor's pause checkpoint; any change also wakes the reactor."""

    def __init__(self, activity: threading.Event) -> None:
        super().__init__()
        self._activity = activity

    def set(self) -> None:
        super().set()
        self._activity.set()

    def clear(self) -> None:
        super().clear()
        self._activity.set()


class _WakingDUL(DULServiceProvider):
    """The DUL reactor, waiting in select() on its socket and its waker when idle."""

    _waker: _Waker

    def _is_transport_event(self) -> bool:
        if super()._is_transport_event():
            return True
        if self._kill_thread or not self.event_queue.empty() or self.to_provider_queue.qsize():
            return False
        assoc_socket = self.socket
        sock = assoc_socket.socket if assoc_socket is not None else None
        watched: list[Any] = [self._waker.read_fd] if sock is None else [sock, self._waker.read_fd]
        try:
            readable, _, _ = select.select(watched, [], [], IDLE_WAIT)
        except (OSError, ValueError):
            return False  # closed meanwhile: the next loop sees it
        if self._waker.read_fd in readable:
            self._waker.drain()
        return False

    def kill_dul(self) -> None:
        super().kill_dul()
        self._waker.wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self._waker.wake()
        return super().stop_dul()


class _ReactorClock:
    """`time` as pynetdicom.association sees it, minus one nap on our tuned threads.

    The association reactor begins every loop with `time.sleep(0.001)`; on an
    association made event-driven by `tune_association` the loop then blocks in
    the DIMSE queue until something happens, so that nap only delays the next
    request (the first DIMSE request after A-ASSOCIATE-AC, A-RELEASE-RQ after a
    response). Every other caller, and every other sleep, is left as it is.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds == 0.001 and getattr(threading.current_thread(), "_tdwii_tuned", False):
            return
        time.sleep(seconds)


def _install_reactor_clock() -> None:
    import pynetdicom.association as association_module

    if not isinstance(getattr(association_module, "time", None), _ReactorClock):
        setattr(association_module, "time", _ReactorClock())  # noqa: B010 (not exported)


def tune_association(assoc: Any) -> None:
    """Make an acceptor association event-driven (call before it starts; see above)."""
    dul = assoc.dul
    waker = _Waker()
    weakref.finalize(dul, _Waker.close_fds, waker.read_fd, waker.write_fd)
    dul.__class__ = _WakingDUL
    dul._waker = waker
    dul._run_loop_delay = 0
    dul.to_provider_queue = _WakingQueue(waker.wake)
    activity = threading.Event()
    dul.to_user_queue = _WakingQueue(activity.set)
    assoc.dimse.msg_queue = _DimseQueue(activity)
    checkpoint = _Checkpoint(activity)
    checkpoint.set()
    assoc._reactor_checkpoint = checkpoint
    assoc._tdwii_tuned = True
    _install_reactor_clock()
