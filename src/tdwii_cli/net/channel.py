"""The upper layer on a blocking socket: every read and send under a deadline, and no
delayed ACK for a peer to wait on.

`Channel(sock, layer)` owns the socket of one `UpperLayer`. `next_event(idle, whole)`
reads until the layer has an event: the first byte of each PDU within `idle` seconds
(within `whole` inside a message), all of the PDU within `whole` seconds of its first
byte however slowly it trickles (else `DeadlineMissed`). `poll(whole)` returns an event
only if bytes of one are here already. `send(data, seconds)` sends within `seconds`
overall, however slowly the peer reads.

A read that leaves a PDU or a message incomplete asks the kernel to acknowledge at once
(TCP_QUICKACK): a peer that leaves Nagle's algorithm on (DCMTK by default, pynetdicom,
Java, dcmjs-dimse) holds its next small segment until the previous one is acknowledged,
which delayed ACK would put off for 40 ms.

Socket errors (`OSError`, `ssl.SSLError`) pass through: the caller knows what they mean
(a client tells a late TLS alert from a reset). `PduStream` reads PDUs and messages off a
socket with no state machine, for tools that speak the protocol by hand (benchmarks,
tests).
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import time

from tdwii_cli.net import dimse, pdu
from tdwii_cli.net.dimse import Message, MessageAssembler
from tdwii_cli.net.errors import (
    ABORT_INVALID_PARAMETER,
    ABORT_UNRECOGNIZED_PDU,
    DeadlineMissed,
    PeerAborted,
    PeerClosed,
    PeerViolation,
)
from tdwii_cli.net.framer import Framer
from tdwii_cli.net.upper import UpperEvent, UpperLayer

_CHUNK = 1 << 16


def quickack(sock: socket.socket) -> bool:
    """Acknowledge what has arrived now rather than after the delayed-ACK timer; False
    when the socket cannot (not TCP, or not Linux)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, _TCP_QUICKACK, 1)
    except (OSError, ValueError):
        return False
    return True


_TCP_QUICKACK = getattr(socket, "TCP_QUICKACK", 12)


def send_all(sock: socket.socket, data: bytes, seconds: float) -> None:
    """Send `data` within `seconds` overall (a peer that reads slowly cannot stretch it)."""
    deadline = time.monotonic() + seconds
    view = memoryview(data)
    while view:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise DeadlineMissed("send", seconds)
        sock.settimeout(remaining)
        try:
            sent = sock.send(view[:_CHUNK])
        except TimeoutError:
            raise DeadlineMissed("send", seconds) from None
        view = view[sent:]


class Channel:
    """One upper layer on one blocking socket (see the module docstring)."""

    def __init__(self, sock: socket.socket, layer: UpperLayer) -> None:
        self.sock = sock
        self.layer = layer
        self._ack = True  # TCP_QUICKACK works here (until it fails once)

    def send(self, data: bytes, seconds: float) -> None:
        send_all(self.sock, data, seconds)

    def next_event(self, idle: float, whole: float) -> UpperEvent:
        """The layer's next event, read within the deadlines (see the module docstring)."""
        layer = self.layer
        event = layer.next_event()
        if event is not None:
            return event
        sock = self.sock
        now = time.monotonic()
        pdu_deadline = now + whole if layer.mid_pdu else 0.0
        wait_deadline = now + (whole if layer.in_message else idle)
        while True:
            if pdu_deadline:
                deadline, stage, seconds = pdu_deadline, "PDU", whole
            else:
                deadline, stage, seconds = wait_deadline, "idle", idle
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineMissed(stage, seconds)
            sock.settimeout(remaining)
            try:
                chunk = sock.recv(_CHUNK)
            except TimeoutError:
                raise DeadlineMissed(stage, seconds) from None
            layer.receive_data(chunk)
            event = layer.next_event()
            if event is not None:
                return event
            if layer.mid_pdu:
                if not pdu_deadline:  # a PDU has begun: all of it within `whole`
                    pdu_deadline = time.monotonic() + whole
            else:  # PDUs completed, a message is not: the next one within `whole`
                pdu_deadline = 0.0
                wait_deadline, idle = time.monotonic() + whole, whole
            if self._ack:
                self._ack = quickack(sock)

    def has_data(self) -> bool:
        """Is a byte of the next event here or readable now (never blocks)?"""
        if self.layer.mid_pdu:
            return True
        sock = self.sock
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return True  # let the next read say what is wrong
        return bool(readable)

    def poll(self, whole: float) -> UpperEvent | None:
        """An event whose bytes are here already (read within `whole`), else None."""
        event = self.layer.next_event()
        if event is not None or not self.has_data():
            return event
        return self.next_event(whole, whole)

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.sock.close()


class PduStream:
    """PDUs and DIMSE messages off a blocking socket, with no state machine: for tools that
    speak the protocol by hand. It reads no byte past the PDU it returns; an A-ABORT is
    `PeerAborted` (from `read_message`), a close `PeerClosed`."""

    def __init__(self, sock: socket.socket, max_length: int = 1 << 26) -> None:
        self.sock = sock
        self.max_length = max_length
        self._framer = Framer()

    def _check(self, pdu_type: int, length: int) -> None:
        if not pdu.A_ASSOCIATE_RQ <= pdu_type <= pdu.A_ABORT:
            raise PeerViolation(f"an unknown PDU type 0x{pdu_type:02X}", ABORT_UNRECOGNIZED_PDU)
        if length > self.max_length:
            raise PeerViolation(f"a PDU of {length} bytes", ABORT_INVALID_PARAMETER)

    def read_pdu(self) -> tuple[int, bytes]:
        """(type, payload) of the next PDU (no byte of the one after is read)."""
        while True:
            unit = self._framer.next_pdu(self._check)
            if unit is not None:
                return unit
            chunk = self.sock.recv(min(self._framer.missing, _CHUNK))
            if not chunk:
                raise PeerClosed()
            self._framer.feed(chunk)

    def read_message(self, max_message: int = dimse.DEFAULT_MAX_MESSAGE) -> Message:
        """The next whole DIMSE message; any other PDU but A-ABORT is a `PeerViolation`."""
        assembler = MessageAssembler(max_message)
        while True:
            pdu_type, payload = self.read_pdu()
            if pdu_type == pdu.A_ABORT:
                raise PeerAborted(payload[2] if len(payload) > 2 else 0)
            if pdu_type != pdu.P_DATA_TF:
                raise PeerViolation(f"expected P-DATA-TF, got PDU type 0x{pdu_type:02X}")
            done = assembler.feed(payload)
            if done:
                return done[0]


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """The next PDU off `sock`, read by hand (nothing after it is read)."""
    return PduStream(sock).read_pdu()
