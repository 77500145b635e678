"""One accepted association, in its own thread: the PS3.8 acceptor state machine from the
A-ASSOCIATE-AC to release or abort, with every read under a deadline.

After the AC (Sta6) the session reads PDUs: the first byte of each within the
network (idle) timeout, the whole PDU within the DIMSE timeout, a P-DATA-TF no
longer than the maximum PDU we announced, a message's data set no longer than
the message size limit (a longer one is discarded and refused with a status).
P-DATA-TF messages go to the session's handler (for `tdwii serve`, the UPS SCP);
an A-RELEASE-RQ is answered with an A-RELEASE-RP; an A-ABORT closes; any other
PDU, a malformed message, a context we did not accept, or a missed deadline is an
A-ABORT (source: service provider) and one log line naming the peer and its
certificate subject. We never request a release ourselves, so there is no release
collision to resolve. While a C-FIND streams, the session watches for C-CANCEL.
`abort()` (from another thread, at shutdown) ends the session at once.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tdwii_cli.dicom import status as st
from tdwii_cli.net import dimse, framing, pdu
from tdwii_cli.net import log as netlog
from tdwii_cli.net.dimse import Message, MessageAssembler
from tdwii_cli.net.negotiation import Negotiated
from tdwii_cli.scp import replies
from tdwii_cli.scp.messages import Handler, Request

if TYPE_CHECKING:
    from tdwii_cli.scp.frontend import Arrival

log = logging.getLogger("tdwii.serve")


class _Released(Exception):
    """The peer asked for (and got) a release."""


class _Stopping(Exception):
    """The server is stopping: abort after the request being served."""


class _PeerAborted(Exception):
    """The peer sent an A-ABORT."""


class _Violation(Exception):
    """The peer broke the protocol: abort with `reason` (PS3.8 table 9-26)."""

    def __init__(self, message: str, reason: int = pdu.ABORT_UNEXPECTED_PDU) -> None:
        super().__init__(message)
        self.reason = reason


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
        self.negotiated = negotiated
        self.calling_ae = calling_ae
        self.called_ae = called_ae
        self.handler = handler
        self.settings = settings
        self.reader = framing.PduReader(self.sock)
        self._leftover = arrival.leftover
        self.assembler = MessageAssembler(settings.max_message, discard=True)
        self._queued: deque[Message] = deque()
        self._aborting = threading.Event()
        self._interrupted: Exception | None = None  # what ended a C-FIND from inside
        self.busy = False  # serving a request: a release now breaks the protocol
        self.who = netlog.who(self.peer, self.identity.subject_cn)

    # -- the thread --------------------------------------------------------------------

    def run(self) -> None:
        """Send the AC, serve until release or abort, close."""
        try:
            self._send(self.negotiated.ac, self.settings.acse_timeout)
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
            # a requestor that did not wait for the AC: what it sent is read in its turn
            self.reader.push_back(self._leftover)
            self._serve()
        except _Released:
            netlog.association_released(self.who)
        except _PeerAborted:
            netlog.association_aborted(self.who, nothing_accepted=not self.negotiated.contexts)
        except framing.Deadline as exc:
            self._abort(
                f"{exc.stage} deadline of {exc.seconds:g} s passed", pdu.ABORT_NOT_SPECIFIED
            )
        except framing.FramingError as exc:
            self._abort(str(exc), exc.reason)
        except _Violation as exc:
            self._abort(str(exc), exc.reason)
        except pdu.ProtocolError as exc:
            self._abort(str(exc), pdu.ABORT_INVALID_PARAMETER)
        except _Stopping:
            self._abort("the server is stopping", pdu.ABORT_NOT_SPECIFIED)
        except (pdu.Closed, OSError, ValueError) as exc:
            if self._aborting.is_set():
                self._abort("the server is stopping", pdu.ABORT_NOT_SPECIFIED)
            elif not self.negotiated.contexts:  # nothing to do here: leaving is normal
                log.info("%s: closed: we accepted none of its contexts", self.who)
            else:
                log.warning("%s: connection lost without release: %s", self.who, _words(exc))
        except Exception:  # a bug must cost this association only, and say so
            log.exception("%s: association failed", self.who)
            self._abort("internal error", pdu.ABORT_NOT_SPECIFIED, quiet=True)
        finally:
            with contextlib.suppress(OSError, ValueError):
                self.sock.close()

    def abort(self, *, hard: bool = False) -> None:
        """End the session (from another thread): its read returns at once and it sends an
        A-ABORT; `hard` also cuts a send that the peer does not read."""
        self._aborting.set()
        with contextlib.suppress(OSError, ValueError):
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR if hard else socket.SHUT_RD)

    # -- reading -----------------------------------------------------------------------

    def _next_pdu(self, idle: float) -> tuple[int, bytes]:
        s = self.settings
        return self.reader.read(idle, s.dimse_timeout, s.max_pdu)

    def _violation(self, message: str, reason: int = pdu.ABORT_UNEXPECTED_PDU) -> None:
        raise _Violation(message, reason)

    def _messages(self, idle: float) -> list[Message]:
        """The messages the next PDU completes; release, abort and the rest handled here."""
        pdu_type, payload = self._next_pdu(idle)
        if pdu_type == pdu.P_DATA_TF:
            return self.assembler.feed(payload)
        if pdu_type == pdu.A_RELEASE_RQ:
            if self.assembler.in_message or self.busy:
                self._violation("A-RELEASE-RQ in the middle of a message")
            self._send(pdu.RELEASE_RP, self.settings.acse_timeout)
            raise _Released
        if pdu_type == pdu.A_ABORT:
            raise _PeerAborted
        self._violation(f"PDU type 0x{pdu_type:02X} on an established association")
        return []  # not reached

    def _serve(self) -> None:
        while True:
            if self._aborting.is_set():
                raise _Stopping
            if self._queued:
                message = self._queued.popleft()
            else:
                # between messages the idle timeout; inside one, each PDU within -td
                idle = (
                    self.settings.dimse_timeout
                    if self.assembler.in_message
                    else self.settings.network_timeout
                )
                done = self._messages(idle)
                if not done:
                    continue
                message, *rest = done
                self._queued.extend(rest)
            self._handle(message)

    # -- one request -------------------------------------------------------------------

    def _handle(self, message: Message) -> None:
        command = message.command
        context = self.negotiated.contexts.get(message.context_id)
        if context is None:
            self._violation(
                f"a message on presentation context {message.context_id}, not one we accepted",
                pdu.ABORT_UNEXPECTED_PARAMETER,
            )
            return
        if command.is_response or command.field == dimse.C_CANCEL_RQ:
            # no request of ours is outstanding; a C-CANCEL after its C-FIND ended is late
            if command.field == dimse.C_CANCEL_RQ:
                netlog.dimse_line(self.peer, "received", command)
                return
            self._violation(f"an unexpected {command.name}")
        if command.message_id is None:
            self._violation(f"{command.name} without a Message ID", pdu.ABORT_INVALID_PARAMETER)
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
                    dimse.encode_message(context.id, rsp, data, self.negotiated.peer_max_pdu),
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
        while self.reader.has_data():
            for message in self._messages(self.settings.dimse_timeout):
                cmd = message.command
                if cmd.field == dimse.C_CANCEL_RQ and cmd.responding_to == request.message_id:
                    netlog.dimse_line(self.peer, "received", cmd)
                    cancelled[0] = True
                elif len(self._queued) >= 4:
                    self._violation("requests beyond the operations window we agreed (1)")
                else:
                    self._queued.append(message)
            if cancelled[0]:
                return True
        return False

    # -- writing and ending ------------------------------------------------------------

    def _send(self, data: bytes, seconds: float) -> None:
        framing.send_all(self.sock, data, seconds)

    def _abort(self, why: str, reason: int, *, quiet: bool = False) -> None:
        if not quiet:
            log.warning("%s: association aborted: %s", self.who, netlog.printable(why))
        with contextlib.suppress(OSError, ValueError, framing.Deadline):
            framing.send_all(self.sock, pdu.abort(2, reason), 1.0)


def _words(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
