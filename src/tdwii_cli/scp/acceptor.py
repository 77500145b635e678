"""The acceptor: the listening socket, the pre-association front end, and one `Session`
thread per accepted association, within the fair limits.

`Acceptor(settings, handler, ssl_context)` binds on `start()` and serves in the
background (`tdwii serve` with the UPS SCP as the handler, `tdwii ups watch` with an
N-EVENT-REPORT receiver); an A-ASSOCIATE-RQ that arrives whole is answered here (on a front
end thread): refused with an A-ASSOCIATE-RJ when negotiation says so or when no
association slot is free for its host, else handed to a new `Session` thread.
`stop(grace)` stops accepting, gives running associations `grace` seconds to
release, and aborts the rest.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import threading
import time
from dataclasses import dataclass

from tdwii_cli.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
)
from tdwii_cli.net import log as netlog
from tdwii_cli.net.channel import send_all
from tdwii_cli.net.errors import DeadlineMissed
from tdwii_cli.net.floodlog import FloodLog
from tdwii_cli.net.negotiation import CALLING_NOT_RECOGNIZED, LOCAL_LIMIT, Acceptance, Refusal
from tdwii_cli.net.upper import Role, UpperLayer
from tdwii_cli.scp.frontend import Arrival, Frontend
from tdwii_cli.scp.limits import Full, Limits, LimitSettings
from tdwii_cli.scp.messages import Gate, Handler
from tdwii_cli.scp.session import Session, SessionSettings
from tdwii_cli.scp.workers import JobThreads

log = logging.getLogger("tdwii.serve")
_flood = FloodLog(log)

# Explicit VR Little Endian first: the encoding the store keeps (nothing to convert)
ACCEPTED_TRANSFER_SYNTAXES = (
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
)


@dataclass(frozen=True)
class AcceptorSettings:
    """What one acceptor accepts and how long it waits (seconds), within which limits."""

    ae_title: str
    abstract_syntaxes: tuple[str, ...]
    limits: LimitSettings
    session: SessionSettings
    handshake_timeout: float
    transfer_syntaxes: tuple[str, ...] = ACCEPTED_TRANSFER_SYNTAXES
    max_pdu: int = 0  # what we announce (0: no limit)
    require_called: bool = False


def wildcard_address() -> str:
    """'::' (dual stack) when this host has IPv6, else '0.0.0.0'."""
    if not socket.has_ipv6:
        return "0.0.0.0"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            probe.bind(("::", 0))
    except OSError:
        return "0.0.0.0"
    return "::"


def listen(host: str, port: int, backlog: int = 512) -> socket.socket:
    """A listening TCP socket; an IPv6 wildcard also takes IPv4 (dual stack)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            with contextlib.suppress(OSError):  # a platform without dual stack
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class Acceptor:
    """See the module docstring."""

    def __init__(
        self,
        settings: AcceptorSettings,
        handler: Handler,
        ssl_context: ssl.SSLContext | None,
        gate: Gate | None = None,
    ) -> None:
        self.config = settings
        self.handler = handler
        self.ssl_context = ssl_context
        self.gate = gate
        self.acceptance = Acceptance(
            settings.ae_title,
            settings.abstract_syntaxes,
            settings.transfer_syntaxes,
            settings.max_pdu,
            require_called=settings.require_called,
        )
        self.limits = Limits(settings.limits)
        self.settings = settings.session
        self.listener: socket.socket | None = None
        self.frontend: Frontend | None = None
        self._thread: threading.Thread | None = None
        self._sessions: dict[Session, threading.Event] = {}  # set when it has ended
        self._threads = JobThreads("tdwii-assoc")
        self._lock = threading.Lock()
        self._stopping = False

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) listened on."""
        assert self.listener is not None
        host, port = self.listener.getsockname()[:2]
        return str(host), int(port)

    def start(self, host: str, port: int) -> None:
        """Bind and serve in the background (`OSError` when the port cannot be had)."""
        self.listener = listen(host, port, backlog=max(128, self.config.limits.max_pending))
        self.frontend = Frontend(
            self.listener,
            self.ssl_context,
            self.limits,
            self._on_request,
            self._new_layer,
            handshake_timeout=self.config.handshake_timeout,
            artim=self.settings.acse_timeout,
            on_refused=self.gate.refused if self.gate is not None else None,
        )
        self._thread = threading.Thread(target=self.frontend.serve, name="tdwii-accept")
        self._thread.daemon = True
        self._thread.start()

    def set_ssl_context(self, ssl_context: ssl.SSLContext) -> None:
        """Use `ssl_context` for connections accepted from now on (a reloaded CRL, say);
        connections already up keep theirs."""
        self.ssl_context = ssl_context
        if self.frontend is not None:
            self.frontend.ssl_context = ssl_context

    def _new_layer(self) -> UpperLayer:
        """The upper layer of a connection just accepted (Sta2)."""
        s = self.settings
        return UpperLayer(
            Role.ACCEPTOR, max_pdata=s.max_pdu, max_message=s.max_message, discard=True
        )

    # -- an A-ASSOCIATE-RQ has arrived (on a front end thread) ---------------------------

    def _on_request(self, arrival: Arrival) -> None:
        rq = arrival.request
        calling = netlog.printable(rq.calling)
        answer = self.acceptance.answer(rq)
        if isinstance(answer, Refusal):
            self._refuse(arrival, answer, calling)
            return
        why = self.gate.admit(rq.calling, arrival.identity) if self.gate is not None else None
        if why is not None:  # the gate has logged it, with the certificate
            self._close(arrival, arrival.layer.reject(CALLING_NOT_RECOGNIZED.encode()))
            return
        holder = holder_of(arrival)
        with self._lock:
            if self._stopping:
                self._close(arrival, arrival.layer.abort())
                return
            full = self.limits.take_slot(arrival.host, holder)
            if full is Full.TOTAL and self._make_room(holder):
                full = self.limits.take_slot(arrival.host, holder)
            if full is not Full.NONE:
                self._refuse(arrival, LOCAL_LIMIT, calling, full=full)
                return
            session = Session(arrival, answer, rq.calling, rq.called, self.handler, self.settings)
            session.holder = holder
            self._sessions[session] = threading.Event()
        self._threads.start(self._run_session, session)

    def _make_room(self, newcomer: str) -> bool:
        """Every slot is taken: end the association idle longest of the holder with the most,
        if it holds at least two more than `newcomer`, and free its slot now (under the
        lock). Busy associations (a request being served) are never ended."""
        held: dict[str, list[Session]] = {}
        for session in self._sessions:
            if not session.evicted:
                held.setdefault(session.holder, []).append(session)
        mine = len(held.get(newcomer, ()))
        candidates = [
            (len(sessions), -min(x.idle_since for x in idle), idle)
            for holder, sessions in held.items()
            if len(sessions) >= mine + 2
            and (idle := [x for x in sessions if not x.busy and x.idle_since])
        ]
        if not candidates:
            return False
        idle = max(candidates, key=lambda c: (c[0], c[1]))[2]
        victim = min(idle, key=lambda x: x.idle_since)
        victim.evict(
            f"its slot was given to another device: all {self.limits.settings.max_associations} "
            f"were taken and its certificate held the most ({len(held[victim.holder])})"
        )
        self.limits.free_slot(victim.host, victim.holder)
        return True

    def _run_session(self, session: Session) -> None:
        try:
            session.run()
        finally:
            with self._lock:
                if not session.evicted:  # an evicted session's slot was freed already
                    self.limits.free_slot(session.host, session.holder)
                done = self._sessions.pop(session, None)
            if done is not None:
                done.set()
        if session.released:  # the association is over; its requestor closes the connection
            frontend = self.frontend
            if frontend is not None:
                session.await_close(frontend.linger)
            else:
                session.channel.close()

    def _refuse(
        self, arrival: Arrival, refusal: Refusal, calling: str, full: Full = Full.NONE
    ) -> None:
        detail = refusal.words
        s = self.limits.settings
        if full is Full.TOTAL:
            detail += f" (all {s.max_associations} associations taken)"
        elif full is not Full.NONE:
            detail += f" ({s.max_associations_per_host} associations per {full.value})"
        _flood.warning(
            f"were rejected: {detail}",
            arrival.peer,
            "%s: association rejected: %s (calling AE %s)",
            _who(arrival),
            detail,
            calling,
        )
        self._close(arrival, arrival.layer.reject(refusal.encode()))

    def _close(self, arrival: Arrival, last: bytes) -> None:
        with contextlib.suppress(OSError, ValueError, DeadlineMissed):
            send_all(arrival.sock, last, 1.0)
        with contextlib.suppress(OSError, ValueError):
            arrival.sock.close()

    # -- stopping ----------------------------------------------------------------------

    def stop(self, grace: float) -> None:
        """Stop accepting; give running associations up to `grace` s to release, then
        abort the rest (a stalled peer costs the stop no more than that)."""
        deadline = time.monotonic() + grace
        if self.frontend is not None:
            self.frontend.stop()
        if self._thread is not None:
            self._thread.join(5.0)
        if self.listener is not None:
            self.listener.close()
        with self._lock:
            self._stopping = True
            running = dict(self._sessions)
        if running:
            log.warning("waiting up to %g s for %d association(s)", grace, len(running))
        for done in running.values():
            done.wait(max(0.0, deadline - time.monotonic()))
        late = [session for session, done in running.items() if not done.is_set()]
        for session in late:
            session.abort()  # its read returns now; it sends an A-ABORT and closes
        for session in late:
            if not running[session].wait(0.5):
                session.abort(hard=True)  # a send the peer does not read
                running[session].wait(0.5)


def holder_of(arrival: Arrival) -> str:
    """Whom an association counts against besides its host: its certificate (by
    fingerprint), or its host when it presented none."""
    fingerprint = arrival.identity.fingerprint
    return f"SHA256:{fingerprint}" if fingerprint else f"host {arrival.host}"


def _who(arrival: Arrival) -> str:
    return netlog.who(arrival.peer, arrival.identity.subject_cn)
