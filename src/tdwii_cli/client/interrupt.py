"""Ctrl-C for a client that has something to cancel first (a C-FIND): `Interrupt`.

The command line's SIGINT handler calls `trip()`. The first one sets the event: the
client checks it between responses and cancels cleanly. While the client waits on its
peer (inside `waiting()`), or from the second one on, `trip()` raises
`tdwii_cli.errors.Interrupted` at once, so a peer that stalls cannot hold the client.
A caller without signals (a thread, a test) just `set()`s it, like any event.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tdwii_cli.errors import Interrupted


class Interrupt(threading.Event):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self._waiting = 0

    def trip(self) -> None:
        """Ctrl-C: set; raise `Interrupted` when waiting on the peer or set already."""
        again = self.is_set()
        self.set()
        if again or self._waiting:
            raise Interrupted()

    @contextmanager
    def waiting(self) -> Iterator[None]:
        """A wait on the peer that `trip()` ends at once (`Interrupted`)."""
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1
