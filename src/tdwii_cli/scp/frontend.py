"""Connections before they are associations: accept, TLS handshake, the A-ASSOCIATE-RQ, all
non-blocking, each under its deadline and the fair limits, without a thread of its own.

One selector thread accepts and waits; when a connection can go on, one step of
its work (a `do_handshake()`, or reading what has come of its A-ASSOCIATE-RQ)
runs on a small pool of threads (OpenSSL releases the GIL, so handshakes run in
parallel) and hands the connection back to the selector. Deadlines: the whole
TLS handshake within `handshake_timeout`, then the whole A-ASSOCIATE-RQ within
the ARTIM time (`artim`). A connection that misses one, breaks the protocol, or
is over a limit is closed (with an A-ABORT when it speaks DICOM), and logged
once; refusals at accept are logged at most once per host every few seconds. The
protocol is each connection's `UpperLayer` (acceptor role, made by `new_layer`): the
bytes read go in, and once it reports a whole A-ASSOCIATE-RQ the connection (its socket
blocking again, the layer in Sta3 holding whatever the requestor sent after the RQ)
goes to `on_request` on a pool thread. When the TLS handshake is done and the request
has not come, the kernel is told to acknowledge at once (TCP_QUICKACK): a client that
leaves Nagle's algorithm on holds its A-ASSOCIATE-RQ until its Finished is acknowledged,
40 ms of delayed ACK otherwise.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import select
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from tdwii_cli.net import floodlog
from tdwii_cli.net import log as netlog
from tdwii_cli.net.channel import quickack
from tdwii_cli.net.errors import PeerAborted, PeerClosed, PeerViolation
from tdwii_cli.net.floodlog import FloodLog
from tdwii_cli.net.pdu import AssociateRQ
from tdwii_cli.net.sockets import format_peer, set_nodelay
from tdwii_cli.net.upper import AssociateRequested, UpperLayer
from tdwii_cli.scp.limits import Full, Limits, host_key
from tdwii_cli.scp.workers import StepPool
from tdwii_cli.tls.context import quiet_after_handshake
from tdwii_cli.tls.peer import PeerIdentity, identity_of
from tdwii_cli.tls.peercheck import unfit
from tdwii_cli.tls.transcript import client_hello, peer_certificate, peer_subject_cn

log = logging.getLogger("tdwii.serve")

_flood = FloodLog(log)
_SOON = 0.002  # a step waits this long for the peer's next bytes before giving its thread back


_CHUNK = 1 << 16


@dataclass
class Arrival:
    """A connection whose A-ASSOCIATE-RQ has arrived whole (its socket blocking again, its
    layer in Sta3 awaiting our answer)."""

    sock: socket.socket
    peer: str
    host: str
    identity: PeerIdentity
    layer: UpperLayer
    request: AssociateRQ


@dataclass(eq=False)
class _Closing:
    """A released association's socket, awaiting its requestor's close until `deadline`."""

    sock: socket.socket
    deadline: float

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.sock.close()


_MAX_CLOSING = 4096  # sockets awaiting a close at once; beyond, the oldest is closed


@dataclass(eq=False)
class _Pending:
    sock: socket.socket
    peer: str
    host: str
    tls: bool
    deadline: float
    layer: UpperLayer
    stage: str = "TLS handshake"
    received: bool = False  # a byte of the A-ASSOCIATE-RQ has come
    identity: PeerIdentity | None = None


class Frontend:
    """The pre-association stage of one listening socket (see the module docstring)."""

    def __init__(
        self,
        listener: socket.socket,
        ssl_context: ssl.SSLContext | None,
        limits: Limits,
        on_request: Callable[[Arrival], None],
        new_layer: Callable[[], UpperLayer],
        *,
        handshake_timeout: float,
        artim: float,
        workers: int | None = None,
        on_refused: Callable[[PeerIdentity, str], None] | None = None,
    ) -> None:
        self.listener = listener
        self.ssl_context = ssl_context
        self.limits = limits
        self.on_request = on_request
        self.new_layer = new_layer
        self.handshake_timeout = handshake_timeout
        self.artim = artim
        self.on_refused = on_refused  # told of each refused handshake and certificate
        self._selector = selectors.DefaultSelector()
        self._pool = StepPool(workers or max(2, min(8, os.cpu_count() or 2)), "tdwii-handshake")
        self._waiting: set[_Pending] = set()  # registered with the selector
        self._by_host: dict[str, dict[_Pending, None]] = {}  # the same, per host, oldest first
        self._closing: dict[_Closing, _Closing] = {}  # released, awaiting the close; oldest first
        self._closing_in: list[_Closing] = []  # handed over, not registered yet
        self._returns: list[tuple[_Pending, int]] = []  # back from a step: (conn, events)
        self._returns_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = threading.Event()

    # -- the selector thread -----------------------------------------------------------

    def serve(self) -> None:
        """Run until `stop()`: accept, wait, expire, hand steps to the pool."""
        self.listener.setblocking(False)
        self._selector.register(self.listener, selectors.EVENT_READ, None)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        next_sweep = 0.0
        try:
            while not self._stopping.is_set():
                for key, _mask in self._selector.select(timeout=0.25):
                    if key.data is None:
                        self._accept()
                    elif key.data == "wake":
                        with contextlib.suppress(OSError):
                            self._wake_r.recv(4096)
                    elif isinstance(key.data, _Closing):
                        self._drain(key.data)
                    else:
                        conn: _Pending = key.data
                        if conn not in self._waiting:  # closed meanwhile (to make room)
                            continue
                        self._unregister(conn)
                        self._pool.submit(self._step, conn)
                self._take_returns()
                self._take_closing()
                now = time.monotonic()
                if now >= next_sweep:
                    self._expire(now)
                    floodlog.tick_all()
                    next_sweep = now + 0.1
        finally:
            self._close_all()

    def stop(self) -> None:
        """Stop accepting; close every connection not associated yet."""
        self._stopping.set()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"\0")

    def _accept(self) -> None:
        for _ in range(64):  # a burst at a time; the selector comes back for the rest
            try:
                raw, address = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors, for instance: go on serving
                log.warning("cannot accept a connection: %s", exc)
                return
            peer = format_peer(address)
            host = host_key(str(address[0]))
            full = self.limits.admit(host)
            if full is Full.TOTAL and self._make_room(host):
                full = self.limits.admit(host)
            if full is not Full.NONE:
                self._refuse_at_accept(raw, host, self.limits.refusal_words(full))
                continue
            try:
                with contextlib.suppress(OSError):
                    set_nodelay(raw)
                raw.setblocking(False)
                tls = self.ssl_context is not None
                sock: socket.socket = raw
                if self.ssl_context is not None:
                    sock = self.ssl_context.wrap_socket(
                        raw, server_side=True, do_handshake_on_connect=False
                    )
                now = time.monotonic()
                conn = _Pending(
                    sock, peer, host, tls, now + self.handshake_timeout, self.new_layer()
                )
                if not tls:
                    conn.stage, conn.deadline = "A-ASSOCIATE-RQ", now + self.artim
                    conn.identity = PeerIdentity(address=peer)
            except (OSError, ValueError) as exc:
                log.warning("%s: connection dropped: %s", peer, exc)
                self.limits.leave(host)
                raw.close()
                continue
            self._register(conn, selectors.EVENT_READ)

    def _refuse_at_accept(self, raw: socket.socket, host: str, why: str) -> None:
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        raw.close()  # a reset: costs the refused host nothing more than its SYN
        _flood.warning(f"were refused ({why})", host, "%s: connection refused: %s", host, why)

    def _register(self, conn: _Pending, events: int) -> None:
        try:
            self._selector.register(conn.sock, events, conn)
        except (OSError, ValueError) as exc:
            self._drop(conn, f"connection lost: {exc}", what="were lost before associating")
            return
        self._waiting.add(conn)
        self._by_host.setdefault(conn.host, {})[conn] = None

    def _unregister(self, conn: _Pending) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(conn.sock)
        self._waiting.discard(conn)
        waiting = self._by_host.get(conn.host)
        if waiting is not None:
            waiting.pop(conn, None)
            if not waiting:
                del self._by_host[conn.host]

    def _make_room(self, newcomer: str) -> bool:
        """All pending places are taken: give the newcomer's host the place of the longest
        waiting connection of the host that holds the most, if that is at least two more
        than the newcomer's (a fair share each); False when there is none to take."""
        victim_host = self.limits.heaviest_pending(newcomer)
        waiting = self._by_host.get(victim_host) if victim_host is not None else None
        if not waiting:
            return False
        victim = next(iter(waiting))
        self._unregister(victim)
        _flood.warning(
            "closed to make room for others (all pending places taken)",
            victim.peer,
            "%s: closed: %s, to make room for another host (all %d pending places taken)",
            netlog.who(victim.peer, victim.identity.subject_cn if victim.identity else None),
            f"{victim.stage} not completed",
            self.limits.settings.max_pending,
        )
        abort = victim.layer.abort(2) if victim.stage != "TLS handshake" else b""
        self._drop(victim, "", abort=abort, quiet=True)
        return True

    def _take_returns(self) -> None:
        with self._returns_lock:
            returns, self._returns = self._returns, []
        now = time.monotonic()
        for conn, events in returns:
            if self._stopping.is_set():
                self._drop(conn, "", quiet=True)
            elif conn.deadline <= now:  # a trickling peer: its steps must not hide it
                self._too_late(conn)
            else:
                self._register(conn, events)

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._waiting if c.deadline <= now]:
            self._unregister(conn)
            self._too_late(conn)
        while self._closing and next(iter(self._closing.values())).deadline <= now:
            self._closed(next(iter(self._closing.values())))

    # -- released associations awaiting their requestor's close (Sta13) -------------------

    def linger(self, sock: socket.socket, seconds: float) -> None:
        """Wait (up to `seconds`) for the peer of a released association to close `sock`,
        then close it; thread-safe. Reads nothing but the close."""
        with self._returns_lock:
            self._closing_in.append(_Closing(sock, time.monotonic() + seconds))
        self._wake()

    def _take_closing(self) -> None:
        with self._returns_lock:
            arrived, self._closing_in = self._closing_in, []
        for item in arrived:
            if self._stopping.is_set():
                item.close()
                continue
            try:
                item.sock.setblocking(False)
                self._selector.register(item.sock, selectors.EVENT_READ, item)
            except (OSError, ValueError):
                item.close()
                continue
            self._closing[item] = item
            if len(self._closing) > _MAX_CLOSING:  # the oldest waits no longer
                self._closed(next(iter(self._closing.values())))

    def _drain(self, item: _Closing) -> None:
        """Read and drop what comes before the close; close at the close."""
        for _ in range(16):
            try:
                if item.sock.recv(_CHUNK):
                    continue
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                return
            except (OSError, ValueError):
                pass
            break
        self._closed(item)

    def _closed(self, item: _Closing) -> None:
        self._closing.pop(item, None)
        with contextlib.suppress(Exception):
            self._selector.unregister(item.sock)
        item.close()

    def _too_late(self, conn: _Pending) -> None:
        seconds = self.handshake_timeout if conn.stage == "TLS handshake" else self.artim
        self._drop(
            conn,
            f"{conn.stage} not completed within {seconds:g} s",
            what=f"did not complete their {conn.stage} within {seconds:g} s",
            abort=conn.layer.abort(2) if conn.stage != "TLS handshake" else b"",
        )

    def _close_all(self) -> None:
        for item in list(self._closing):
            self._closed(item)
        for conn in list(self._waiting):
            self._unregister(conn)
            self._drop(conn, "", quiet=True)
        self._waiting.clear()
        self._pool.shutdown()
        self._take_returns()  # steps that finished meanwhile
        with contextlib.suppress(Exception):
            self._selector.close()
        self._wake_r.close()
        self._wake_w.close()

    # -- one step, on a pool thread ----------------------------------------------------

    def _back(self, conn: _Pending, events: int) -> None:
        with self._returns_lock:
            self._returns.append((conn, events))
        self._wake()

    def _step(self, conn: _Pending) -> None:
        try:
            if conn.stage == "TLS handshake":
                assert isinstance(conn.sock, ssl.SSLSocket)
                try:
                    while True:
                        try:
                            conn.sock.do_handshake()
                            break
                        except ssl.SSLWantReadError:
                            if not self._soon_readable(conn.sock):
                                raise
                except ssl.SSLWantReadError:
                    return self._back(conn, selectors.EVENT_READ)
                except ssl.SSLWantWriteError:
                    return self._back(conn, selectors.EVENT_WRITE)
                except (OSError, ValueError) as exc:
                    if client_hello(conn.sock) is None and isinstance(
                        exc, (ssl.SSLEOFError, ConnectionError)
                    ):  # closed before a ClientHello: a port probe, not a refusal
                        log.debug("%s: closed before its TLS ClientHello", conn.peer)
                        return self._drop(conn, "", quiet=True)
                    try:
                        failure = netlog.handshake_failed(
                            conn.peer, exc, "server", conn.sock, _flood
                        )
                        self._tell_refused(conn, f"TLS handshake failed: {failure.reason}")
                    except Exception:  # the log must never stop the server
                        log.warning("%s: TLS handshake failed: %s", conn.peer, exc)
                    return self._drop(conn, "", quiet=True)
                conn.identity = identity_of(conn.sock, conn.peer)
                try:
                    netlog.handshake_ok(conn.peer, conn.sock)
                except Exception as exc:  # pragma: no cover - logging problems only
                    log.debug("%s: cannot describe the peer: %s", conn.peer, exc)
                der = conn.sock.getpeercert(binary_form=True)
                why = unfit(der) if der else ""
                if why:
                    self._tell_refused(conn, f"certificate refused: {why}", conn.identity)
                    return self._drop(
                        conn,
                        f"certificate refused: {why}",
                        what="presented a certificate unfit for TLS client authentication",
                    )
                quiet_after_handshake(conn.sock)  # no more transcript: it costs per record
                conn.stage, conn.deadline = "A-ASSOCIATE-RQ", time.monotonic() + self.artim
                quickack(conn.sock)  # the client's Finished acknowledged now, not in 40 ms
                self._read_request(conn)
                return
            self._read_request(conn)
        except Exception as exc:  # never lose a pool thread or a connection's count
            log.error("%s: unexpected error before association: %r", conn.peer, exc)
            self._drop(conn, "", quiet=True)

    def _soon_readable(self, sock: socket.socket) -> bool:
        """Do the peer's next bytes come within `_SOON` (a client on a LAN answers in well
        under that)? Waiting here spares the round trip through the selector. Only while no
        other step waits for a thread: under load, a peer that stalls costs nothing here."""
        if self._pool.waiting():
            return False
        try:
            readable, _, _ = select.select([sock], [], [], _SOON)
        except (OSError, ValueError):
            return False
        return bool(readable)

    def _tell_refused(
        self, conn: _Pending, reason: str, identity: PeerIdentity | None = None
    ) -> None:
        """Tell `on_refused` (the audit trail) of a refused connection, with what is known of
        the certificate presented: after a failed handshake, its CN and fingerprint."""
        if self.on_refused is None:
            return
        if identity is None:
            der = peer_certificate(conn.sock)
            identity = PeerIdentity(
                address=conn.peer,
                subject_cn=peer_subject_cn(conn.sock),
                fingerprint=hashlib.sha256(der).hexdigest() if der else None,
            )
        try:
            self.on_refused(identity, reason)
        except Exception as exc:  # auditing must never stop the server
            log.warning("%s: cannot record the refusal: %r", conn.peer, exc)

    def _read_request(self, conn: _Pending) -> bool:
        """Read what has come of the A-ASSOCIATE-RQ; False when the connection went back to
        the selector to wait for more."""
        sock, layer = conn.sock, conn.layer
        while True:
            try:
                event = layer.next_event()
            except PeerViolation as exc:
                self._drop(
                    conn, exc.message, abort=exc.abort, what="broke the protocol before associating"
                )
                return True
            except PeerAborted:
                self._drop(conn, "A-ABORT before associating", what="aborted before associating")
                return True
            except PeerClosed:
                why = "closed before its A-ASSOCIATE-RQ" if conn.received else ""
                self._drop(conn, why, quiet=not why, what="closed before their A-ASSOCIATE-RQ")
                return True
            if isinstance(event, AssociateRequested):
                self._arrived(conn, event.request)
                return True
            try:
                chunk = sock.recv(_CHUNK)
            except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                if conn.received:  # part of the request: the rest may wait on our ACK
                    quickack(sock)
                if self._soon_readable(sock):
                    continue
                self._back(conn, selectors.EVENT_READ)
                return False
            except ssl.SSLWantWriteError:
                self._back(conn, selectors.EVENT_WRITE)
                return False
            except (OSError, ValueError) as exc:
                self._drop(
                    conn,
                    f"connection lost before A-ASSOCIATE-RQ: {exc}",
                    what="were lost before their A-ASSOCIATE-RQ",
                )
                return True
            conn.received = conn.received or bool(chunk)
            layer.receive_data(chunk)

    def _arrived(self, conn: _Pending, request: AssociateRQ) -> None:
        self.limits.leave(conn.host)
        assert conn.identity is not None
        arrival = Arrival(conn.sock, conn.peer, conn.host, conn.identity, conn.layer, request)
        try:
            conn.sock.setblocking(True)
            self.on_request(arrival)
        except Exception as exc:
            log.error("%s: cannot start the association: %r", conn.peer, exc)
            with contextlib.suppress(OSError):
                conn.sock.close()

    # -- closing -----------------------------------------------------------------------

    def _drop(
        self,
        conn: _Pending,
        why: str,
        *,
        what: str = "were closed before associating",
        abort: bytes = b"",
        quiet: bool = False,
    ) -> None:
        """Close a pending connection (sending `abort` first), count it out, log `why`
        (summarized with others of the same `what` from its network under a flood)."""
        if why and not quiet:
            # before the handshake is done: the certificate it sent, if any (transcript)
            subject = conn.identity.subject_cn if conn.identity else peer_subject_cn(conn.sock)
            _flood.warning(
                what,
                conn.peer,
                "%s: closed: %s",
                netlog.who(conn.peer, subject),
                netlog.printable(why),
            )
        if abort:
            with contextlib.suppress(OSError, ValueError):
                conn.sock.send(abort)
        with contextlib.suppress(OSError, ValueError):
            conn.sock.close()
        self.limits.leave(conn.host)
