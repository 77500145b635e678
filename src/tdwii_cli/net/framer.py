"""PDUs cut out of a byte stream, without a socket: bytes in, whole PDUs out.

`Framer.feed(data)` takes what the transport delivered; `next_pdu(check)` returns the
next whole PDU as (type, payload), or None until it has arrived. `check(type, length)`
is called once per PDU as soon as its 6-byte header is here, before any of its body is
waited for, so that a PDU of an unknown or unexpected type, or longer than allowed, is
refused (it raises) without buffering what follows.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from tdwii_cli.net.pdu import HEADER

_HEADER = struct.Struct(">BBL")


class Framer:
    """Whole PDUs out of the bytes fed in (see the module docstring)."""

    __slots__ = ("_checked", "_data", "_pos")

    def __init__(self) -> None:
        self._data = b""
        self._pos = 0
        self._checked = False  # the header at _pos has been through `check`

    def feed(self, data: bytes) -> None:
        """Bytes from the transport, in order."""
        if self._pos >= len(self._data):
            self._data, self._pos = data, 0
        else:
            self._data = self._data[self._pos :] + data
            self._pos = 0

    @property
    def buffered(self) -> int:
        """Bytes fed and not yet handed out as a PDU."""
        return len(self._data) - self._pos

    @property
    def missing(self) -> int:
        """Bytes still to come before the next PDU's header, or else its body, is whole."""
        have = len(self._data) - self._pos
        if have < HEADER:
            return HEADER - have
        length: int = _HEADER.unpack_from(self._data, self._pos)[2]
        return max(0, HEADER + length - have)

    def next_pdu(self, check: Callable[[int, int], None]) -> tuple[int, bytes] | None:
        """The next whole PDU (type, payload), or None while it is incomplete."""
        pos, data = self._pos, self._data
        if len(data) - pos < HEADER:
            return None
        pdu_type, _, length = _HEADER.unpack_from(data, pos)
        if not self._checked:
            check(pdu_type, length)
            self._checked = True
        end = pos + HEADER + length
        if len(data) < end:
            return None
        payload = data[pos + HEADER : end]
        self._pos = end
        self._checked = False
        return pdu_type, payload

    def rest(self) -> bytes:
        """What is buffered and not handed out (and forget it)."""
        rest = self._data[self._pos :]
        self._data, self._pos, self._checked = b"", 0, False
        return rest
