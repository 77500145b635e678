"""An association we request: the requestor's adapter of the upper layer on a socket.

`open_association(...)` connects (TCP_NODELAY, TLS with the given context),
proposes the presentation contexts, yields an `Association` and releases it when
the body is done; whatever goes wrong on the way (refusal, timeout, abort, TLS
verdicts that come late in TLS 1.3, a peer that is not DICOM) is raised as one of
the typed errors of `tdwii_cli.net.errors`. The protocol is `tdwii_cli.net.upper`'s;
this module owns the socket and the deadlines: the A-ASSOCIATE-AC and the A-RELEASE-RP
each whole within the ACSE timeout, each response PDU whole within the DIMSE timeout,
however slowly a peer drips its bytes.

On the `Association`, `request()` sends any C- or N- request (a `Command` and
an optional data set) and yields its responses, pending ones first (C-FIND, C-GET,
C-MOVE only: no other operation has pending responses); `send()` and `response()`
split that in two for callers that overlap work with the peer's.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import ssl
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from tdwii_cli.dicom.status import is_pending
from tdwii_cli.dicom.uids import TRANSFER_SYNTAXES, uid_name
from tdwii_cli.errors import TdwiiError
from tdwii_cli.net import dimse, pdu
from tdwii_cli.net import log as netlog
from tdwii_cli.net.channel import Channel, send_all
from tdwii_cli.net.dimse import Command, Message
from tdwii_cli.net.errors import (
    AssociationAborted,
    AssociationRejected,
    ClosedBeforeAnswer,
    ConnectionLost,
    ContextRefused,
    DeadlineMissed,
    HandshakeFailed,
    NetError,
    PeerAborted,
    PeerClosed,
    PeerTimeout,
    PeerViolation,
    ProtocolViolation,
    Unreachable,
    Unresolvable,
    UpperLayerError,
    closed_after_handshake,
)
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.net.sockets import set_nodelay
from tdwii_cli.net.upper import (
    AssociateAccepted,
    AssociateRejected,
    MessageReceived,
    ReleaseConfirmed,
    ReleaseRequested,
    Role,
    UpperLayer,
)
from tdwii_cli.tls.diagnosis import HandshakeFailure, describe_handshake_error

log = logging.getLogger("tdwii.net")


@dataclass(frozen=True)
class AcceptedContext:
    """A presentation context the peer accepted: its id, abstract and transfer syntax."""

    id: int
    abstract_syntax: str
    transfer_syntax: str


def propose(
    abstract_syntaxes: Sequence[str],
    transfer_syntaxes: Sequence[str] = TRANSFER_SYNTAXES,
    *,
    separate: bool = False,
) -> list[pdu.PresentationContext]:
    """Presentation contexts for each abstract syntax: one offering every transfer syntax,
    or with `separate` one per transfer syntax (the acceptor then accepts each it supports
    and we pick, instead of the acceptor)."""
    groups = [(ts,) for ts in transfer_syntaxes] if separate else [tuple(transfer_syntaxes)]
    contexts: list[pdu.PresentationContext] = []
    for abstract in abstract_syntaxes:
        for group in groups:
            contexts.append(pdu.PresentationContext(2 * len(contexts) + 1, abstract, group))
    return contexts


_STREAMING = frozenset({dimse.C_FIND_RQ, dimse.C_GET_RQ, dimse.C_MOVE_RQ})


class Association:
    """An established association: its socket, what the peer accepted, the TLS session."""

    def __init__(
        self,
        channel: Channel,
        peer: str,
        options: ScuOptions,
        accepted: pdu.AssociateAC,
        proposed: Sequence[pdu.PresentationContext],
    ) -> None:
        self.channel = channel
        self.sock = channel.sock
        self.peer = peer
        self.options = options
        self.accepted = accepted
        self.proposed = {cx.id: cx for cx in proposed}
        self._message_id = 0
        # what the A-ASSOCIATE-AC said of each proposed context, read once
        self.accepted_contexts: list[AcceptedContext] = []  # in the order we proposed them
        self.rejected_contexts: list[tuple[str, str]] = []  # (abstract syntax, the reason)
        for cid, result, syntax in sorted(accepted.contexts):
            proposal = self.proposed.get(cid)
            if proposal is None:
                continue
            if result == 0 and syntax in proposal.transfer_syntaxes:
                self.accepted_contexts.append(
                    AcceptedContext(cid, proposal.abstract_syntax, syntax)
                )
            elif result != 0:
                why = pdu.CONTEXT_RESULTS.get(result, f"result {result}")
                self.rejected_contexts.append((proposal.abstract_syntax, why))

    @property
    def max_pdu(self) -> int:
        """The longest P-DATA-TF the peer takes (0: no limit)."""
        return self.accepted.max_pdu

    @property
    def tls_version(self) -> str:
        return (self.sock.version() or "") if isinstance(self.sock, ssl.SSLSocket) else ""

    @property
    def cipher(self) -> str:
        if not isinstance(self.sock, ssl.SSLSocket):
            return ""
        return (self.sock.cipher() or ("",))[0]

    def context(
        self, abstract_syntax: str, preferred: Sequence[str] = TRANSFER_SYNTAXES
    ) -> AcceptedContext:
        """The accepted context for `abstract_syntax` whose transfer syntax comes first in
        `preferred` (any accepted one if none is); `ContextRefused` when there is none."""
        found = [cx for cx in self.accepted_contexts if cx.abstract_syntax == abstract_syntax]
        if not found:
            raise ContextRefused(self.peer, self.options.called_aet, abstract_syntax)
        rank = {ts: i for i, ts in enumerate(preferred)}
        return min(found, key=lambda cx: rank.get(cx.transfer_syntax, len(rank)))

    def next_message_id(self) -> int:
        """A fresh Message ID (1..65535, then round again)."""
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def send(self, command: Command, dataset: bytes | None, context: AcceptedContext) -> None:
        """Send one message on `context`, fragmented to the peer's maximum PDU, within the
        DIMSE timeout."""
        data = self.channel.layer.send_message(context.id, command, dataset, self.max_pdu)
        self.channel.send(data, self.options.dimse_timeout)

    def receive(self, timeout: float | None = None) -> Message:
        """The next message from the peer: each of its PDUs whole within `timeout` (default
        the DIMSE timeout); `DeadlineMissed` after it."""
        if timeout is None:
            timeout = self.options.dimse_timeout
        event = self.channel.next_event(timeout, timeout)
        if isinstance(event, MessageReceived):
            return event.message
        if isinstance(event, ReleaseRequested):  # the peer ends it: let it, then say so
            with contextlib.suppress(OSError, ValueError, UpperLayerError):
                self.channel.send(self.channel.layer.release_response(), 1.0)
            raise AssociationAborted(
                self.peer, "the peer released the association before answering", tls=self.tls
            )
        raise PeerViolation(f"{type(event).__name__} on an established association")

    @property
    def tls(self) -> bool:
        return isinstance(self.sock, ssl.SSLSocket)

    def response(self, request: Command, timeout: float | None = None) -> Message:
        """The next message, checked to be a response to `request` (`PeerViolation` if
        not), within `timeout` (see `receive`)."""
        message = self.receive(timeout)
        rsp = message.command
        expected = request.field | 0x8000
        if rsp.field != expected:
            raise PeerViolation(
                f"expected a response 0x{expected:04X}, got Command Field 0x{rsp.field:04X}"
            )
        if rsp.status is None:
            raise PeerViolation(f"{rsp.name} without a Status")
        if rsp.responding_to != request.message_id:
            raise PeerViolation(
                f"{rsp.name} answers message {rsp.responding_to}, not {request.message_id}"
            )
        return message

    def request(
        self, command: Command, dataset: bytes | None, context: AcceptedContext
    ) -> Iterator[Message]:
        """Send `command` (with `dataset`) and yield its responses: for C-FIND, C-GET and
        C-MOVE the pending ones as they come, then the final one; for any other request
        its one response (a Pending status there is the peer's error, for the caller to
        judge, not a promise of more)."""
        self.send(command, dataset, context)
        streams = command.field in _STREAMING
        while True:
            message = self.response(command)
            yield message
            status = message.command.status
            if not streams or status is None or not is_pending(status):
                return

    def cancel(self, request: Command, context: AcceptedContext) -> None:
        """C-CANCEL-RQ for the pending `request` (its responses keep coming until the final)."""
        cancel = Command(field=dimse.C_CANCEL_RQ, responding_to=request.message_id)
        self.send(cancel, None, context)


def connect(host: str, port: int, ctx: ssl.SSLContext | None, options: ScuOptions) -> socket.socket:
    """A TCP (+ TLS) connection with TCP_NODELAY; `Unreachable` or `HandshakeFailed`."""
    peer = f"{host}:{port}"
    try:
        source = (options.source_address, 0) if options.source_address else None
        raw = socket.create_connection(
            (host, port), timeout=options.connect_timeout, source_address=source
        )
    except socket.gaierror:
        raise Unresolvable(peer, host) from None
    except OSError as exc:
        if options.source_address and exc.errno == errno.EADDRNOTAVAIL:
            raise TdwiiError(
                f"cannot connect from {options.source_address}: not an address of this host"
            ) from None
        words = (
            "connection timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        )
        raise Unreachable(peer, words) from None
    set_nodelay(raw)
    if ctx is None:
        raw.settimeout(options.acse_timeout)
        return raw
    try:
        sock = ctx.wrap_socket(raw, server_hostname=host)  # handshake within the connect timeout
    except OSError as exc:
        raw.close()
        failure = describe_handshake_error(exc, side="client", context=ctx)
        raise HandshakeFailed(peer, failure) from None
    netlog.handshake_ok(peer, sock)
    sock.settimeout(options.acse_timeout)
    return sock


def _associate(
    channel: Channel,
    peer: str,
    options: ScuOptions,
    contexts: Sequence[pdu.PresentationContext],
    tls_on: bool,
    mutual: bool,
) -> pdu.AssociateAC:
    """A-ASSOCIATE-RQ, and the AC whole within the ACSE timeout; the errors only this
    first exchange can tell apart."""
    sock = channel.sock
    if log.isEnabledFor(logging.DEBUG):
        for cx in contexts:
            log.debug(
                "%s: A-ASSOCIATE-RQ %s -> %s, context %d: %s with %s, our max PDU %d",
                peer,
                options.calling_aet,
                options.called_aet,
                cx.id,
                uid_name(cx.abstract_syntax),
                ", ".join(uid_name(ts) for ts in cx.transfer_syntaxes),
                pdu.MAX_PDU,
            )
    timeout = options.acse_timeout
    try:
        rq = pdu.associate_rq(options.calling_aet, options.called_aet, contexts)
        channel.send(channel.layer.request(rq), timeout)
        event = channel.next_event(timeout, timeout)
    except ssl.SSLError as exc:
        if not isinstance(exc, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):
            raise HandshakeFailed(peer, _failure(exc, sock)) from None
        raise _closed(peer, sock, mutual) from None
    except DeadlineMissed:
        raise PeerTimeout(peer) from None
    except PeerAborted:
        # an A-ABORT over an established TLS session: our certificate was accepted
        raise AssociationAborted(
            peer, "A-ABORT in answer to the association request", tls=tls_on
        ) from None
    except (PeerClosed, OSError) as exc:
        if not tls_on:
            # a TLS server reads our A-ASSOCIATE-RQ as a broken ClientHello and hangs up
            raise ClosedBeforeAnswer(peer, tls=False) from None
        raise _closed(peer, sock, mutual) from exc
    if isinstance(event, AssociateRejected):
        raise AssociationRejected(peer, options.called_aet, str(event.reject))
    if not isinstance(event, AssociateAccepted):  # pragma: no cover - the layer allows no other
        raise PeerViolation(f"{type(event).__name__} in answer to the association request")
    return event.accept


def _failure(exc: BaseException, sock: socket.socket) -> HandshakeFailure:
    """A late TLS alert (TLS 1.3: after our side of the handshake), in our context's words."""
    context = sock.context if isinstance(sock, ssl.SSLSocket) else None
    return describe_handshake_error(exc, side="client", context=context)


def _closed(peer: str, sock: socket.socket, mutual: bool) -> NetError:
    """The server hung up on our A-ASSOCIATE-RQ over TLS. In TLS 1.3 it judges our
    certificate after our side of the handshake is done, and its alert is often lost when it
    closes on our unread request: that is evidence about our certificate, unless it sent us
    a session ticket (it does so only once it took our certificate). In TLS 1.2 the
    handshake's success already means it took our certificate: it just did not answer."""
    if isinstance(sock, ssl.SSLSocket) and sock.version() == "TLSv1.3":
        session = sock.session
        if session is None or not session.has_ticket:
            return closed_after_handshake(peer, mutual)
    return ClosedBeforeAnswer(peer, tls=True)


def release(channel: Channel, timeout: float) -> None:
    """A-RELEASE-RQ, then its RP whole within `timeout` (late responses to a cancelled
    request are passed over; a peer that aborts or just closes has released too)."""
    layer = channel.layer
    deadline = time.monotonic() + timeout
    try:
        channel.send(layer.release(), timeout)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeadlineMissed("release", timeout)
            event = channel.next_event(remaining, remaining)
            if isinstance(event, ReleaseConfirmed):
                return
            if isinstance(event, ReleaseRequested):  # a release collision: answer it too
                channel.send(layer.release_response(), remaining)
    except (PeerAborted, PeerClosed, OSError):
        return  # the work is done and the peer has gone: that ends it too
    except (DeadlineMissed, PeerViolation) as exc:  # the work is done: say so, go on
        log.warning("the peer did not confirm the release: %s", exc)


@contextmanager
def open_association(
    host: str,
    port: int,
    ctx: ssl.SSLContext | None,
    options: ScuOptions,
    contexts: Sequence[pdu.PresentationContext],
    *,
    mutual: bool = True,
    required: Sequence[str] | None = None,
) -> Iterator[Association]:
    """An association proposing `contexts` (see `propose`), released after the body.

    Every abstract syntax in `required` (default: all proposed) must be accepted,
    else the association is released and `ContextRefused` raised. Each PDU is awaited
    within the DIMSE timeout inside the body (the ACSE timeout while associating and
    releasing). Failures in the body are translated too; a `NetError` from the body
    passes through, and on any failure (Ctrl-C included) the peer gets an A-ABORT and
    the connection is closed.
    """
    peer = f"{host}:{port}"
    tls_on = ctx is not None
    sock = connect(host, port, ctx, options)
    channel = Channel(sock, UpperLayer(Role.REQUESTOR, max_pdata=pdu.MAX_PDU))
    established = False
    try:
        acc = _associate(channel, peer, options, contexts, tls_on, mutual)
        assoc = Association(channel, peer, options, acc, contexts)
        netlog.association_accepted(
            peer,
            options.calling_aet,
            acc.called,
            acc.max_pdu,
            [(cx.abstract_syntax, cx.transfer_syntax) for cx in assoc.accepted_contexts],
            assoc.rejected_contexts,
        )
        established = True
        wanted = [cx.abstract_syntax for cx in contexts] if required is None else required
        for abstract in dict.fromkeys(wanted):
            if not any(cx.abstract_syntax == abstract for cx in assoc.accepted_contexts):
                established = False
                release(channel, options.acse_timeout)
                raise ContextRefused(peer, options.called_aet, abstract)
        yield assoc
        established = False
        release(channel, options.acse_timeout)
        netlog.association_released(peer)
    except NetError:
        raise
    except DeadlineMissed:
        raise PeerTimeout(peer) from None
    except ssl.SSLError as exc:  # TLS 1.3: the server's verdict on our certificate comes late
        raise HandshakeFailed(peer, _failure(exc, sock)) from None
    except (PeerAborted, PeerClosed) as exc:
        established = False
        raise AssociationAborted(peer, str(exc), tls=tls_on) from None
    except PeerViolation as exc:
        established = False
        _send_quietly(sock, exc.abort)
        raise ProtocolViolation(peer, str(exc)) from None
    except OSError as exc:
        raise ConnectionLost(peer, exc.strerror or str(exc)) from None
    finally:
        if established:  # the body failed or was interrupted: tell the peer (A-ABORT)
            _send_quietly(sock, channel.layer.abort())
        sock.close()


def _send_quietly(sock: socket.socket, data: bytes) -> None:
    """Send `data` (an A-ABORT) if the peer takes it within a second; never raise."""
    if data:
        with contextlib.suppress(OSError, ValueError, DeadlineMissed):
            send_all(sock, data, 1.0)
