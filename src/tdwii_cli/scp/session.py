"""One accepted association, in its own thread: the acceptor's adapter of the upper layer
(`tdwii_cli.net.upper`) from the A-ASSOCIATE-AC to release or abort, every read under a
deadline.

After the AC (Sta6) the session reads PDUs: the first byte of each within the
network (idle) timeout, the whole PDU within the DIMSE timeout, a P-DATA-TF no
longer than the maximum PDU we announced, a message's data set no longer than
the message size limit (a longer one is discarded and refused with a status).
Messages go to the session's handler (for `tdwii serve`, the UPS SCP); an
A-RELEASE-RQ is answered with an A-RELEASE-RP, after which the requestor closes the
connection (Sta13: `await_close`, run once the association's slot is free); an
A-ABORT closes; anything the protocol does not allow, a context we did not accept,
or a missed deadline is an A-ABORT (source: service provider) and one log line
naming the peer and its certificate subject. We never request a release ourselves.
While a C-FIND streams, the session watches for C-CANCEL. `abort()` (from another
thread, at shutdown or to make room) ends the session at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tdwii_cli.dicom import status as st
from tdwii_cli.net import dimse
from tdwii_cli.net import log as netlog
from tdwii_cli.net.channel import Channel
from tdwii_cli.net.dimse import Message
from tdwii_cli.net.errors import (
    ABORT_INVALID_PARAMETER,
    ABORT_NOT_SPECIFIED,
    ABORT_UNEXPECTED_PARAMETER,
    ABORT_UNEXPECTED_PDU,
    DeadlineMissed,
    PeerAborted,
    PeerClosed,
    PeerViolation,
)
from tdwii_cli.net.floodlog import FloodLog
from tdwii_cli.net.negotiation import Negotiated
from tdwii_cli.net.upper import MessageReceived, ReleaseRequested
from tdwii_cli.scp import replies
from tdwii_cli.scp.messages import Handler, Request

if TYPE_CHECKING:
    from tdwii_cli.scp.frontend import Arrival

log = logging.getLogger("tdwii.serve")

_flood = FloodLog(log)
QUICK_CLOSE = 0.1  # how long a session thread waits for the requestor's close itself


class _Released(Exception):
    """The peer asked for (and got) a release."""


class _Stopping(Exception):
    """The server is stopping: abort after the request being served."""


@dataclass(frozen=True)
class SessionSettings:
    """The timeouts (seconds) and limits (bytes) every session of one server uses."""

    acse_timeout: float
    dimse_timeout: float
    network_timeout: float
    max_pdu: int
    max_message: int


class Session:
    """One association (see the module docstring); `run()` is its thread's body."""

    def __init__(
        self,
        arrival: Arrival,
        negotiated: Negotiated,
        calling_ae: str,
        called_ae: str,
        handler: Handler,
        settings: SessionSettings,
    ) -> None:
        self.sock = arrival.sock
        self.peer = arrival.peer
        self.host = arrival.host
        self.identity = arrival.identity
        self.channel = Channel(arrival.sock, arrival.layer)
        self.negotiated = negotiated
        self.calling_ae = calling_ae
        self.called_ae = called_ae
        self.handler = handler
        self.settings = settings
        self._queued: deque[Message] = deque()
        self._aborting = threading.Event()
        self._interrupted: Exception | None = None  # what ended a C-FIND from inside
        self.busy = False  # serving a request: a release now breaks the protocol
        self.released = False  # ended by a release: the requestor closes (Sta13)
        self.holder = ""  # whom its slot counts against besides its host (the acceptor's)
        self.idle_since = time.monotonic()  # since when it has waited for a request (0: busy)
        self.evicted = False  # its slot was given to another device
        self._end = "the server is stopping"  # why, when ended from another thread
        self.who = netlog.who(self.peer, self.identity.subject_cn)

    # -- the thread --------------------------------------------------------------------

    def run(self) -> None:
        """Send the AC, serve until release or abort; close, unless released (then
        `await_close`)."""
        try:
            self._send(self.channel.layer.accept(self.negotiated.ac), self.settings.acse_timeout)
            netlog.association_accepted(
                self.peer,
                self.calling_ae,
                self.called_ae,
                self.negotiated.peer_max_pdu,
                [
                    (cx.abstract_syntax, cx.transfer_syntax)
                    for cx in self.negotiated.contexts.values()
                ],
                self.negotiated.rejected,
            )
            self._serve()
        except _Released:
            netlog.association_released(self.who)
            self.released = True
        except PeerAborted:
            netlog.association_aborted(self.who, nothing_accepted=not self.negotiated.contexts)
        except DeadlineMissed as exc:
            if self._aborting.is_set():
                self._abort(self._end, ABORT_NOT_SPECIFIED)
            else:
                self._abort(
                    f"{exc.stage} deadline of {exc.seconds:g} s passed", ABORT_NOT_SPECIFIED
                )
        except PeerViolation as exc:
            self._abort(str(exc), exc.reason, pdu_bytes=exc.abort)
        except _Stopping:
            self._abort(self._end, ABORT_NOT_SPECIFIED)
        except (PeerClosed, OSError, ValueError) as exc:
            if self._aborting.is_set():
                self._abort(self._end, ABORT_NOT_SPECIFIED)
            elif not self.negotiated.contexts:  # nothing to do here: leaving is normal
                log.info("%s: closed: we accepted none of its contexts", self.who)
            else:
                _flood.warning(
                    "were lost without release",
                    self.peer,
                    "%s: connection lost without release: %s",
                    self.who,
                    _words(exc),
                )
        except Exception:  # a bug must cost this association only, and say so
            log.exception("%s: association failed", self.who)
            self._abort("internal error", ABORT_NOT_SPECIFIED, quiet=True)
        finally:
            if not self.released:
                self.channel.close()

    def await_close(self, hand_over: Callable[[socket.socket, float], None]) -> None:
        """Sta13 after our A-RELEASE-RP: the requestor closes the connection (closing first
        ourselves makes its late TLS close_notify meet a reset). Wait briefly here, then
        `hand_over` the socket with the ARTIM time left to whoever waits for many."""
        sock = self.sock
        deadline = time.monotonic() + QUICK_CLOSE
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                sock.settimeout(remaining)
                if not sock.recv(4096):  # what comes before the close is ignored (AA-6)
                    self.channel.close()
                    return
        except TimeoutError:
            pass
        except (OSError, ValueError):
            self.channel.close()
            return
        hand_over(sock, self.settings.acse_timeout)

    def evict(self, why: str) -> None:
        """End the session to give its slot to another device (from another thread)."""
        self.evicted = True
        self.abort(why=why)

    def abort(self, *, hard: bool = False, why: str = "") -> None:
        """End the session (from another thread): its read returns at once and it sends an
        A-ABORT; `hard` also cuts a send that the peer does not read."""
        if why:
            self._end = why
        self._aborting.set()
        with contextlib.suppress(OSError, ValueError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR if hard else socket.SHUT_RD)

    # -- reading -----------------------------------------------------------------------

    def _violation(self, message: str, reason: int = ABORT_UNEXPECTED_PDU) -> None:
        raise PeerViolation(message, reason)

    def _on_event(self, event: object) -> Message:
        """The message `event` brings; a release is answered here (and ends the session)."""
        if isinstance(event, MessageReceived):
            return event.message
        if isinstance(event, ReleaseRequested):
            if self.busy:
                self._violation("A-RELEASE-RQ in the middle of a request")
            self._send(self.channel.layer.release_response(), self.settings.acse_timeout)
            raise _Released
        raise PeerViolation(f"{type(event).__name__} on an established association")

    def _serve(self) -> None:
        s = self.settings
        while True:
            if self._aborting.is_set():
                raise _Stopping
            if self._queued:
                message = self._queued.popleft()
            else:
                # between messages the idle timeout; each PDU (and inside a message, the
                # wait for the next) within -td
                self.idle_since = time.monotonic()
                message = self._on_event(
                    self.channel.next_event(s.network_timeout, s.dimse_timeout)
                )
            self._handle(message)

    # -- one request -------------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        command = message.command
        context = self.negotiated.contexts.get(message.context_id)
        if context is None:
            self._violation(
                f"a message on presentation context {message.context_id}, not one we accepted",
                ABORT_UNEXPECTED_PARAMETER,
            )
            return
        if command.is_response or command.field == dimse.C_CANCEL_RQ:
            # no request of ours is outstanding; a C-CANCEL after its C-FIND ended is late
            if command.field == dimse.C_CANCEL_RQ:
                netlog.dimse_line(self.peer, "received", command)
                return
            self._violation(f"an unexpected {command.name}")
        if command.message_id is None:
            self._violation(f"{command.name} without a Message ID", ABORT_INVALID_PARAMETER)
        assert context is not None
        netlog.dimse_line(self.peer, "received", command)
        started = time.perf_counter()
        cancelled = [False]
        request = Request(
            command=command,
            data=message.dataset,
            transfer_syntax=context.transfer_syntax,
            calling_ae=self.calling_ae,
            peer=self.identity,
            cancelled=lambda: cancelled[0] or self._cancel_arrived(command, cancelled),
        )
        self.busy = True
        self.idle_since = 0.0
        layer = self.channel.layer
        try:
            if message.too_large:
                log.warning(
                    "%s: %s refused: its data set is over the %d-byte message limit",
                    self.who,
                    command.name,
                    self.settings.max_message,
                )
                results = iter([replies.too_large(command)])
            else:
                results = self.handler(request)
            for reply in results:
                if self._interrupted is not None:
                    break
                rsp, data = replies.response(request, reply)
                self._send(
                    layer.send_message(context.id, rsp, data, self.negotiated.peer_max_pdu),
                    self.settings.dimse_timeout,
                )
                if not st.is_pending(reply.status):
                    netlog.dimse_line(
                        self.peer, "sent", rsp, (time.perf_counter() - started) * 1000
                    )
        finally:
            self.busy = False
            close = getattr(results, "close", None)
            if close is not None:
                close()  # a C-FIND ended early: its database cursor closes now
        if self._interrupted is not None:
            raise self._interrupted

    def _cancel_arrived(self, request: dimse.Command, cancelled: list[bool]) -> bool:
        """Has a C-CANCEL for `request` arrived (read without waiting; others are queued)?

        Whatever else ends the association meanwhile (an A-ABORT, a release, a deadline,
        a broken PDU) cancels the request too, and is raised once it has ended."""
        try:
            return self._read_for_cancel(request, cancelled)
        except Exception as exc:
            self._interrupted = exc
            cancelled[0] = True
            return True

    def _read_for_cancel(self, request: dimse.Command, cancelled: list[bool]) -> bool:
        while True:
            event = self.channel.poll(self.settings.dimse_timeout)
            if event is None:
                return cancelled[0]
            message = self._on_event(event)
            cmd = message.command
            if cmd.field == dimse.C_CANCEL_RQ and cmd.responding_to == request.message_id:
                netlog.dimse_line(self.peer, "received", cmd)
                cancelled[0] = True
                return True
            if len(self._queued) >= 4:
                self._violation("requests beyond the operations window we agreed (1)")
            self._queued.append(message)

    # -- writing and ending ------------------------------------------------------------

    def _send(self, data: bytes, seconds: float) -> None:
        self.channel.send(data, seconds)

    def _abort(self, why: str, reason: int, *, quiet: bool = False, pdu_bytes: bytes = b"") -> None:
        """Log `why`, send the A-ABORT (`pdu_bytes`, or one with `reason`)."""
        if not quiet:
            log.warning("%s: association aborted: %s", self.who, netlog.printable(why))
        data = pdu_bytes or self.channel.layer.abort(2, reason)
        with contextlib.suppress(OSError, ValueError, DeadlineMissed):
            self.channel.send(data, 1.0)


def _words(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
