"""PDUs off a socket with deadlines: an idle limit for the first byte, a bound for the whole
PDU however slowly it trickles, a maximum length checked before the body is read.

`PduReader(sock)` buffers what the socket gives (one TLS record at a time) and
hands out whole PDUs. A PDU whose header names an unknown type or a length over
the caller's limit is a `FramingError` (with the A-ABORT reason to send) before
any of its body is read; a deadline missed is `Deadline` (a `TimeoutError`); a
peer that closes is `pdu.Closed`.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import time

from tdwii_cli.net import pdu

_CHUNK = 1 << 16


class Deadline(TimeoutError):
    """A read did not complete in time: `stage` says which ("idle", "PDU", ...)."""

    def __init__(self, stage: str, seconds: float) -> None:
        self.stage, self.seconds = stage, seconds
        super().__init__(f"{stage} deadline of {seconds:g} s passed")


class FramingError(pdu.ProtocolError):
    """A PDU header we refuse; `reason` is the A-ABORT reason (PS3.8 table 9-26)."""

    def __init__(self, message: str, reason: int) -> None:
        super().__init__(message)
        self.reason = reason


class PduReader:
    """Whole PDUs from `sock` (blocking, any timeout), each within its deadlines."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def push_back(self, data: bytes) -> None:
        """Bytes already read from the socket (by someone else) that come first."""
        self._buffer[:0] = data

    def has_data(self) -> bool:
        """Is a byte of the next PDU here or readable now (never blocks)?"""
        if self._buffer:
            return True
        if isinstance(self.sock, ssl.SSLSocket) and self.sock.pending():
            return True
        try:
            readable, _, _ = select.select([self.sock], [], [], 0)
        except (OSError, ValueError):
            return True  # let the next read say what is wrong
        return bool(readable)

    def _fill(self, n: int, deadline: float, stage: str, seconds: float) -> None:
        while len(self._buffer) < n:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Deadline(stage, seconds)
            self.sock.settimeout(remaining)
            try:
                chunk = self.sock.recv(_CHUNK)
            except TimeoutError:
                raise Deadline(stage, seconds) from None
            if not chunk:
                raise pdu.Closed("the peer closed the connection")
            self._buffer += chunk

    def read(
        self,
        idle: float,
        whole: float,
        max_pdata: int,
        max_other: int = pdu.MAX_CONTROL_PDU,
    ) -> tuple[int, bytes]:
        """(PDU type, payload): its first byte within `idle` seconds, all of it within
        `whole` seconds of that; a P-DATA-TF over `max_pdata` (0: no limit) or another PDU
        over `max_other` is refused after its header."""
        if not self._buffer:
            self._fill(1, time.monotonic() + idle, "idle", idle)
        deadline = time.monotonic() + whole
        self._fill(6, deadline, "PDU", whole)
        pdu_type, _, length = struct.unpack_from(">BBL", self._buffer)
        if not pdu.A_ASSOCIATE_RQ <= pdu_type <= pdu.A_ABORT:
            raise FramingError(f"an unknown PDU type 0x{pdu_type:02X}", pdu.ABORT_UNRECOGNIZED_PDU)
        limit = max_pdata if pdu_type == pdu.P_DATA_TF else max_other
        if limit and length > limit:
            raise FramingError(
                f"a PDU of {length} bytes (type 0x{pdu_type:02X}), over our maximum {limit}",
                pdu.ABORT_INVALID_PARAMETER,
            )
        self._fill(6 + length, deadline, "PDU", whole)
        payload = bytes(self._buffer[6 : 6 + length])
        del self._buffer[: 6 + length]
        return pdu_type, payload


def send_all(sock: socket.socket, data: bytes, seconds: float) -> None:
    """Send `data` within `seconds` overall (a peer that reads slowly cannot stretch it)."""
    deadline = time.monotonic() + seconds
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise Deadline("send", seconds)
        sock.settimeout(remaining)
        try:
            sent = sock.send(view[:_CHUNK])
        except TimeoutError:
            raise Deadline("send", seconds) from None
        view = view[sent:]
