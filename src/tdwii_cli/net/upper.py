"""The DICOM upper layer without a socket (sans-IO): bytes in, events out; local primitives
in, bytes to send out. One `UpperLayer` per connection, for either role.

Received bytes go to `receive_data()` (b"" when the transport closed); `next_event()`
then returns the next `AssociateRequested`, `AssociateAccepted`, `AssociateRejected`,
`MessageReceived`, `ReleaseRequested`, `ReleaseConfirmed` or `Closed`, or None while
more bytes are needed. What ends the association abnormally is raised, all of it
`UpperLayerError`: `PeerAborted` (an A-ABORT), `PeerClosed` (the connection closed
without one), `PeerViolation` (the peer broke the protocol; its `abort` is the A-ABORT
to send before closing). Local primitives (`request`, `accept`, `reject`,
`send_message`, `release`, `release_response`, `abort`) return the bytes to send.

Every transition is PS3.8 table 9-10 (`tdwii_cli.net.machine`); a PDU is judged on
its header (type, length against the limits, whether it may come in this state)
before its body is waited for. P-DATA-TF fragments are joined into DIMSE messages
(`tdwii_cli.net.dimse.MessageAssembler`), however many one PDU completes. The caller
owns the socket, the timers and the deadlines (`tdwii_cli.net.channel` for blocking
sockets, `tdwii_cli.scp.frontend` for non-blocking ones).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from enum import Enum
from typing import NoReturn

from tdwii_cli.net import dimse, pdu
from tdwii_cli.net.dimse import Command, Message, MessageAssembler
from tdwii_cli.net.errors import (
    ABORT_INVALID_PARAMETER,
    ABORT_UNEXPECTED_PDU,
    ABORT_UNRECOGNIZED_PDU,
    PeerAborted,
    PeerClosed,
    PeerViolation,
    UpperLayerError,
)
from tdwii_cli.net.framer import Framer
from tdwii_cli.net.machine import NEXT, PDU_EVENTS, TABLE, Event, State


class Role(Enum):
    REQUESTOR = "requestor"
    ACCEPTOR = "acceptor"


# -- what the peer did -----------------------------------------------------------------


@dataclass(frozen=True)
class AssociateRequested:
    """An A-ASSOCIATE-RQ arrived (acceptor; Sta3: `accept` or `reject` it)."""

    request: pdu.AssociateRQ


@dataclass(frozen=True)
class AssociateAccepted:
    """The A-ASSOCIATE-AC (requestor; Sta6)."""

    accept: pdu.AssociateAC


@dataclass(frozen=True)
class AssociateRejected:
    """The A-ASSOCIATE-RJ (requestor; Sta1: close the connection)."""

    reject: pdu.AssociateRJ


@dataclass(frozen=True)
class MessageReceived:
    """A whole DIMSE message."""

    message: Message


@dataclass(frozen=True)
class ReleaseRequested:
    """The peer's A-RELEASE-RQ (answer it with `release_response`); `collision`: we had
    asked for a release too."""

    collision: bool = False


@dataclass(frozen=True)
class ReleaseConfirmed:
    """The A-RELEASE-RP to our request (Sta1: the requestor closes the connection)."""


@dataclass(frozen=True)
class Closed:
    """The transport closed where that is the normal end (Sta13: after our A-RELEASE-RP,
    A-ASSOCIATE-RJ or A-ABORT)."""


UpperEvent = (
    AssociateRequested
    | AssociateAccepted
    | AssociateRejected
    | MessageReceived
    | ReleaseRequested
    | ReleaseConfirmed
    | Closed
)


class LocalMisuse(UpperLayerError):
    """We asked for a primitive the state does not allow (a bug of ours, not the peer's)."""


# the longest PDU of each kind; a P-DATA-TF's is the layer's `max_pdata`
_MAX_LENGTH: dict[int, int] = {
    pdu.A_ASSOCIATE_RQ: pdu.MAX_ASSOCIATE,
    pdu.A_ASSOCIATE_AC: pdu.MAX_ASSOCIATE,
    pdu.A_ASSOCIATE_RJ: pdu.MAX_FIXED,
    pdu.A_RELEASE_RQ: pdu.MAX_FIXED,
    pdu.A_RELEASE_RP: pdu.MAX_FIXED,
    pdu.A_ABORT: pdu.MAX_FIXED,
}
_MIN_LENGTH = 4  # every PDU but P-DATA-TF has at least 4 bytes of fixed fields
_NORMAL_IN_CLOSING = frozenset({"AA-6"})  # PDUs ignored while awaiting the close


class UpperLayer:
    """One connection's upper layer (see the module docstring).

    `max_pdata`: the longest P-DATA-TF accepted (what we announced; an announced 0,
    "no limit", is given here as the bound we really keep); `max_message` and
    `discard`: see `MessageAssembler`.
    """

    def __init__(
        self,
        role: Role,
        *,
        max_pdata: int = pdu.MAX_PDU,
        max_message: int = dimse.DEFAULT_MAX_MESSAGE,
        discard: bool = False,
    ) -> None:
        if max_pdata <= 0:
            raise ValueError("max_pdata is the bound kept: a positive number of bytes")
        self.role = role
        self.max_pdata = max_pdata
        self.state = State.IDLE
        self.framer = Framer()
        self.assembler = MessageAssembler(max_message, discard=discard)
        self._events: deque[UpperEvent] = deque()
        self._eof = False
        if role is Role.ACCEPTOR:
            self._apply(Event.TRANSPORT_INDICATION)  # AE-5: Sta2, ARTIM running

    # -- state ---------------------------------------------------------------------------

    def _apply(self, event: Event) -> str:
        """The action for `event` in the current state, and the state it leads to."""
        action = TABLE.get((event, self.state))
        if action is None:
            raise LocalMisuse(f"{event.label} is not possible in {self.state.label}")
        following = NEXT[action]
        if following is not None:
            self.state = following
        return action

    @property
    def established(self) -> bool:
        """Sta6: messages may go both ways."""
        return self.state is State.ESTABLISHED

    @property
    def mid_pdu(self) -> bool:
        """Part of a PDU has arrived, not all of it."""
        return self.framer.buffered > 0

    @property
    def in_message(self) -> bool:
        """Part of a DIMSE message has arrived, not all of it."""
        return self.assembler.in_message

    # -- bytes in, events out ------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """What the transport delivered; b"" when it closed."""
        if data:
            self.framer.feed(data)
        else:
            self._eof = True

    def next_event(self) -> UpperEvent | None:
        """The next event, or None until more bytes arrive (see the module docstring)."""
        while True:
            if self._events:
                return self._events.popleft()
            unit = self.framer.next_pdu(self._check_header)
            if unit is None:
                if self._eof:
                    return self._transport_closed()
                return None
            event = self._pdu(*unit)
            if event is not None:
                return event

    def _check_header(self, pdu_type: int, length: int) -> None:
        """Refuse a PDU on its header: unknown, unexpected here, or too long."""
        event = PDU_EVENTS.get(pdu_type)
        if event is None:
            self._violation(
                f"an unknown PDU type 0x{pdu_type:02X}; is the peer DICOM (over TLS if we use it)?",
                ABORT_UNRECOGNIZED_PDU,
            )
        limit = self.max_pdata if event is Event.P_DATA_RECEIVED else _MAX_LENGTH[pdu_type]
        if length > limit:
            self._violation(
                f"a PDU of {length} bytes (type 0x{pdu_type:02X}), over our maximum {limit}",
                ABORT_INVALID_PARAMETER,
            )
        if event is not Event.P_DATA_RECEIVED and length < _MIN_LENGTH:
            self._violation(
                f"a PDU of type 0x{pdu_type:02X} of {length} bytes, too short",
                ABORT_INVALID_PARAMETER,
            )
        action = TABLE.get((event, self.state), "AA-8")
        if action in ("AA-8", "AA-1", "AA-7"):
            self._violation(
                f"{_PDU_NAMES[pdu_type]} in {self.state.label} ({_STATE_WORDS[self.state]})",
                ABORT_UNEXPECTED_PDU,
            )

    def _violation(self, message: str, reason: int) -> NoReturn:
        """Evt19 (or an unexpected PDU): AA-8/AA-1/AA-7, the A-ABORT to send, Sta13."""
        self.state = State.AWAITING_CLOSE
        self._events.clear()
        raise PeerViolation(message, reason)

    def _pdu(self, pdu_type: int, payload: bytes) -> UpperEvent | None:
        event = PDU_EVENTS[pdu_type]
        if event is Event.P_DATA_RECEIVED:
            self._apply(event)  # DT-2 (Sta6) or AR-6 (Sta7), or AA-6 (ignored in Sta13)
            if self.state is State.AWAITING_CLOSE:
                return None
            try:
                done = self.assembler.feed(payload)
            except PeerViolation as exc:
                self._violation(str(exc), exc.reason)
            if not done:
                return None
            self._events.extend(MessageReceived(m) for m in done[1:])
            return MessageReceived(done[0])
        before = self.state
        action = self._apply(event)
        if action in _NORMAL_IN_CLOSING:
            return None
        if event is Event.ABORT_RECEIVED:
            self._events.clear()
            if before is State.AWAITING_CLOSE:
                return Closed()
            raise PeerAborted(*_abort_fields(payload))
        if event is Event.RQ_RECEIVED:  # AE-6
            try:
                request = pdu.parse_associate_rq(payload)
            except PeerViolation as exc:
                self._violation(f"a malformed A-ASSOCIATE-RQ: {exc}", exc.reason)
            self.state = State.AWAITING_LOCAL_ASSOCIATE_RESPONSE
            return AssociateRequested(request)
        if event is Event.AC_RECEIVED:  # AE-3
            try:
                return AssociateAccepted(pdu.parse_associate_ac(payload))
            except PeerViolation as exc:
                self._violation(f"a malformed A-ASSOCIATE-AC: {exc}", exc.reason)
        if event is Event.RJ_RECEIVED:  # AE-4
            return AssociateRejected(pdu.parse_associate_rj(payload))
        if event is Event.RELEASE_RQ_RECEIVED:
            if self.assembler.in_message:
                self._violation("A-RELEASE-RQ in the middle of a message", ABORT_UNEXPECTED_PDU)
            if action == "AR-8":  # both asked: who answers first depends on the role
                self.state = (
                    State.COLLISION_REQUESTOR_AWAITING_LOCAL
                    if self.role is Role.REQUESTOR
                    else State.COLLISION_ACCEPTOR_AWAITING_RP
                )
                return ReleaseRequested(collision=True)
            return ReleaseRequested()  # AR-2
        if event is Event.RELEASE_RP_RECEIVED:  # AR-3 or AR-10
            return ReleaseConfirmed()
        raise AssertionError(f"no handling for {event}")  # pragma: no cover

    def _transport_closed(self) -> UpperEvent:
        """Evt17: normal in Sta13 (AR-5), an A-P-ABORT anywhere else (AA-4, AA-5)."""
        before = self.state
        if before is State.IDLE:
            return Closed()
        self._apply(Event.TRANSPORT_CLOSED)
        if before is State.AWAITING_CLOSE:
            return Closed()
        if self.framer.buffered:
            raise PeerClosed("the peer closed the connection in the middle of a PDU")
        raise PeerClosed()

    # -- local primitives in, bytes out --------------------------------------------------

    def request(self, rq: bytes) -> bytes:
        """Evt1 and Evt2 (the transport is connected already): send our A-ASSOCIATE-RQ."""
        self._apply(Event.ASSOCIATE_REQUEST)
        self._apply(Event.TRANSPORT_CONFIRM)
        return rq

    def accept(self, ac: bytes) -> bytes:
        """Evt7: our A-ASSOCIATE-AC."""
        self._apply(Event.ACCEPT)
        return ac

    def reject(self, rj: bytes) -> bytes:
        """Evt8: our A-ASSOCIATE-RJ; then await the close (Sta13)."""
        self._apply(Event.REJECT)
        return rj

    def send_message(
        self, context_id: int, command: Command, dataset: bytes | None, max_pdu: int
    ) -> bytes:
        """Evt9: one DIMSE message as P-DATA-TF PDUs, fragmented for the peer's `max_pdu`."""
        self._apply(Event.P_DATA_REQUEST)
        return dimse.encode_message(context_id, command, dataset, max_pdu)

    def release(self) -> bytes:
        """Evt11: our A-RELEASE-RQ (Sta7)."""
        self._apply(Event.RELEASE_REQUEST)
        return pdu.RELEASE_RQ

    def release_response(self) -> bytes:
        """Evt14: our A-RELEASE-RP; then await the peer's close (Sta13), or, in a collision
        on the requestor's side, its RP (Sta11)."""
        self._apply(Event.RELEASE_RESPONSE)
        return pdu.RELEASE_RP

    def abort(self, source: int = 0, reason: int = 0) -> bytes:
        """Evt15: the A-ABORT to send (b"": nothing to send, the association having ended
        or the connection not being open). Before an A-ASSOCIATE-RQ has come whole (Sta2,
        where PS3.8 only closes) the peer gets one too: it tells a slow requestor why."""
        self._events.clear()
        if (Event.ABORT_REQUEST, self.state) not in TABLE:
            was = self.state
            self.state = State.IDLE if was is State.IDLE else State.AWAITING_CLOSE
            return pdu.abort(source, reason) if was is State.AWAITING_RQ else b""
        action = self._apply(Event.ABORT_REQUEST)
        return pdu.abort(source, reason) if action == "AA-1" else b""

    def timer_expired(self) -> None:
        """Evt18: the ARTIM timer (awaiting the A-ASSOCIATE-RQ, or the close): close now."""
        if (Event.ARTIM_EXPIRED, self.state) in TABLE:
            self._apply(Event.ARTIM_EXPIRED)
        else:
            self.state = State.IDLE


def _abort_fields(payload: bytes) -> tuple[int, int]:
    return (payload[2], payload[3]) if len(payload) >= 4 else (0, 0)


_PDU_NAMES: dict[int, str] = {
    pdu.A_ASSOCIATE_RQ: "A-ASSOCIATE-RQ",
    pdu.A_ASSOCIATE_AC: "A-ASSOCIATE-AC",
    pdu.A_ASSOCIATE_RJ: "A-ASSOCIATE-RJ",
    pdu.P_DATA_TF: "P-DATA-TF",
    pdu.A_RELEASE_RQ: "A-RELEASE-RQ",
    pdu.A_RELEASE_RP: "A-RELEASE-RP",
    pdu.A_ABORT: "A-ABORT",
}
_STATE_WORDS = {
    State.IDLE: "no connection",
    State.AWAITING_RQ: "before the association request",
    State.AWAITING_LOCAL_ASSOCIATE_RESPONSE: "before we answered the association request",
    State.AWAITING_TRANSPORT_OPEN: "before the connection is open",
    State.AWAITING_AC: "awaiting the association answer",
    State.ESTABLISHED: "on an established association",
    State.AWAITING_RELEASE_RP: "awaiting the release answer",
    State.AWAITING_LOCAL_RELEASE_RESPONSE: "after the peer asked for a release",
    State.COLLISION_REQUESTOR_AWAITING_LOCAL: "in a release collision",
    State.COLLISION_ACCEPTOR_AWAITING_RP: "in a release collision",
    State.COLLISION_REQUESTOR_AWAITING_RP: "in a release collision",
    State.COLLISION_ACCEPTOR_AWAITING_LOCAL: "in a release collision",
    State.AWAITING_CLOSE: "after the association ended",
}
