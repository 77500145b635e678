"""Ctrl-C on the command line: one line and exit 130 within a second, whatever runs.

`stop_on_ctrl_c()` (the application, at start): SIGINT raises
`tdwii_cli.errors.Interrupted` wherever the main thread is, a blocking read included;
what is open is aborted on the way out (an association gets its A-ABORT), and the
application prints the one line. `cancel_on_ctrl_c()` (a command with something to
cancel first: `ups find`): the first Ctrl-C trips an `Interrupt` (see
`client.interrupt`) and arms an alarm of `GRACE` seconds; the command cancels and waits
for the peer's answer until then; the alarm, or a second Ctrl-C, raises `Interrupted`.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from tdwii_cli.errors import Interrupted

if TYPE_CHECKING:
    from tdwii_cli.client.interrupt import Interrupt

GRACE = 0.5  # seconds from the first Ctrl-C to giving up on the peer's answer


def _interrupted(_signum: int, _frame: object) -> None:
    raise Interrupted()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def stop_on_ctrl_c() -> None:
    """From now on, Ctrl-C raises `Interrupted` (in the main thread)."""
    if _main_thread():
        signal.signal(signal.SIGINT, _interrupted)


def ignore_ctrl_c() -> None:
    """Ctrl-C does nothing any more: the one line about how it ended is being printed."""
    if _main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextmanager
def cancel_on_ctrl_c(grace: float = GRACE) -> Iterator[Interrupt]:
    """An `Interrupt` tripped by Ctrl-C, given `grace` seconds (see the module docstring)."""
    from tdwii_cli.client.interrupt import Interrupt

    interrupt = Interrupt()
    if not _main_thread():
        yield interrupt
        return
    alarm = hasattr(signal, "setitimer")

    def on_sigint(_signum: int, _frame: object) -> None:
        if alarm and not interrupt.is_set():
            signal.setitimer(signal.ITIMER_REAL, grace)
        interrupt.trip()

    previous: dict[int, Any] = {signal.SIGINT: signal.signal(signal.SIGINT, on_sigint)}
    if alarm:
        previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, _interrupted)
    try:
        yield interrupt
    finally:
        if alarm:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
