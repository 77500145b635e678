"""Connections before they are associations: accept, TLS handshake, the A-ASSOCIATE-RQ, all
non-blocking, each under its deadline and the fair limits, without a thread of its own.

One selector thread accepts and waits; when a connection can go on, one step of
its work (a `do_handshake()`, or reading what has come of its A-ASSOCIATE-RQ)
runs on a small pool of threads (OpenSSL releases the GIL, so handshakes run in
parallel) and hands the connection back to the selector. Deadlines: the whole
TLS handshake within `handshake_timeout`, then the whole A-ASSOCIATE-RQ within
the ARTIM time (`artim`). A connection that misses one, breaks the protocol, or
is over a limit is closed (with an A-ABORT when it speaks DICOM), and logged
once; refusals at accept are logged at most once per host every few seconds. A
complete A-ASSOCIATE-RQ goes to `on_request` on a pool thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import selectors
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tdwii_cli.net import log as netlog
from tdwii_cli.net import pdu
from tdwii_cli.net.sockets import format_peer, set_nodelay
from tdwii_cli.scp.limits import Limits, host_key
from tdwii_cli.scp.workers import StepPool
from tdwii_cli.tls.context import quiet_after_handshake
from tdwii_cli.tls.peer import PeerIdentity, identity_of
from tdwii_cli.tls.peercheck import unfit
from tdwii_cli.tls.transcript import client_hello, peer_certificate, peer_subject_cn

log = logging.getLogger("tdwii.serve")

MAX_ASSOCIATE_RQ = 1 << 17  # 128 KiB: 128 contexts with many transfer syntaxes fit easily
_REFUSAL_LOG_EVERY = 5.0
_CHUNK = 1 << 16


@dataclass
class Arrival:
    """A connection whose A-ASSOCIATE-RQ has arrived whole (its socket blocking again)."""

    sock: socket.socket
    peer: str
    host: str
    identity: PeerIdentity
    payload: bytes  # the A-ASSOCIATE-RQ's payload
    leftover: bytes = b""  # what the requestor sent after it (it should wait for the AC)


@dataclass(eq=False)
class _Pending:
    sock: socket.socket
    peer: str
    host: str
    tls: bool
    deadline: float
    stage: str = "TLS handshake"
    buffer: bytearray = field(default_factory=bytearray)
    identity: PeerIdentity | None = None


class Frontend:
    """The pre-association stage of one listening socket (see the module docstring)."""

    def __init__(
        self,
        listener: socket.socket,
        ssl_context: ssl.SSLContext | None,
        limits: Limits,
        on_request: Callable[[Arrival], None],
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
        self.handshake_timeout = handshake_timeout
        self.artim = artim
        self.on_refused = on_refused  # told of each refused handshake and certificate
        self._selector = selectors.DefaultSelector()
        self._pool = StepPool(workers or max(2, min(8, os.cpu_count() or 2)), "tdwii-handshake")
        self._waiting: set[_Pending] = set()  # registered with the selector
        self._returns: list[tuple[_Pending, int]] = []  # back from a step: (conn, events)
        self._returns_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stopping = threading.Event()
        self._refused: dict[str, tuple[float, int]] = {}  # host -> (last logged, count since)

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
                    else:
                        conn: _Pending = key.data
                        self._selector.unregister(conn.sock)
                        self._waiting.discard(conn)
                        self._pool.submit(self._step, conn)
                self._take_returns()
                now = time.monotonic()
                if now >= next_sweep:
                    self._expire(now)
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
            why = self.limits.admit(host)
            if why:
                self._refuse_at_accept(raw, host, why)
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
                conn = _Pending(sock, peer, host, tls, now + self.handshake_timeout)
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
        now = time.monotonic()
        last, count = self._refused.get(host, (0.0, 0))
        count += 1
        if now - last >= _REFUSAL_LOG_EVERY:
            more = f" ({count} since the last such line)" if count > 1 else ""
            log.warning("%s: connection refused: %s%s", host, why, more)
            self._refused[host] = (now, 0)
        else:
            self._refused[host] = (last, count)
        if len(self._refused) > 4096:  # the table is for the log only: keep it small
            self._refused.clear()

    def _register(self, conn: _Pending, events: int) -> None:
        try:
            self._selector.register(conn.sock, events, conn)
        except (OSError, ValueError) as exc:
            self._drop(conn, f"connection lost: {exc}")
            return
        self._waiting.add(conn)

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
            self._selector.unregister(conn.sock)
            self._waiting.discard(conn)
            self._too_late(conn)

    def _too_late(self, conn: _Pending) -> None:
        seconds = self.handshake_timeout if conn.stage == "TLS handshake" else self.artim
        self._drop(
            conn,
            f"{conn.stage} not completed within {seconds:g} s",
            abort=conn.stage != "TLS handshake",
        )

    def _close_all(self) -> None:
        for conn in list(self._waiting):
            with contextlib.suppress(Exception):
                self._selector.unregister(conn.sock)
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
                    conn.sock.do_handshake()
                except ssl.SSLWantReadError:
                    return self._back(conn, selectors.EVENT_READ)
                except ssl.SSLWantWriteError:
                    return self._back(conn, selectors.EVENT_WRITE)
                except (OSError, ValueError) as exc:
                    try:
                        failure = netlog.handshake_failed(conn.peer, exc, "server", conn.sock)
                        # a bare close before any ClientHello is a probe, not a refusal
                        if failure.cause != "closed" or client_hello(conn.sock) is not None:
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
                    return self._drop(conn, f"certificate refused: {why}")
                quiet_after_handshake(conn.sock)  # no more transcript: it costs per record
                conn.stage, conn.deadline = "A-ASSOCIATE-RQ", time.monotonic() + self.artim
            self._read_request(conn)
        except Exception as exc:  # never lose a pool thread or a connection's count
            log.error("%s: unexpected error before association: %r", conn.peer, exc)
            self._drop(conn, "", quiet=True)

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

    def _read_request(self, conn: _Pending) -> None:
        sock = conn.sock
        while True:
            if len(conn.buffer) >= 6:
                pdu_type, _, length = struct.unpack_from(">BBL", conn.buffer)
                if pdu_type == pdu.A_ABORT:
                    return self._drop(conn, "A-ABORT before associating")
                if pdu_type != pdu.A_ASSOCIATE_RQ:
                    reason = (
                        pdu.ABORT_UNEXPECTED_PDU
                        if pdu.A_ASSOCIATE_RQ <= pdu_type <= pdu.A_ABORT
                        else pdu.ABORT_UNRECOGNIZED_PDU
                    )
                    return self._drop(
                        conn,
                        f"PDU type 0x{pdu_type:02X} instead of an A-ASSOCIATE-RQ",
                        abort=True,
                        reason=reason,
                    )
                if length > MAX_ASSOCIATE_RQ:
                    return self._drop(
                        conn,
                        f"an A-ASSOCIATE-RQ of {length} bytes, over {MAX_ASSOCIATE_RQ}",
                        abort=True,
                        reason=pdu.ABORT_INVALID_PARAMETER,
                    )
                if len(conn.buffer) >= 6 + length:
                    return self._arrived(conn, length)
            try:
                chunk = sock.recv(_CHUNK)
            except (ssl.SSLWantReadError, BlockingIOError, InterruptedError):
                return self._back(conn, selectors.EVENT_READ)
            except ssl.SSLWantWriteError:
                return self._back(conn, selectors.EVENT_WRITE)
            except (OSError, ValueError) as exc:
                return self._drop(conn, f"connection lost before A-ASSOCIATE-RQ: {exc}")
            if not chunk:
                return self._drop(
                    conn,
                    "closed before its A-ASSOCIATE-RQ" if conn.buffer else "",
                    quiet=not conn.buffer,
                )
            conn.buffer += chunk

    def _arrived(self, conn: _Pending, length: int) -> None:
        self.limits.leave(conn.host)
        data = bytes(conn.buffer)
        assert conn.identity is not None
        arrival = Arrival(
            conn.sock, conn.peer, conn.host, conn.identity, data[6 : 6 + length], data[6 + length :]
        )
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
        abort: bool = False,
        reason: int = 0,
        quiet: bool = False,
    ) -> None:
        """Close a pending connection (A-ABORT first when asked), count it out, log `why`."""
        if why and not quiet:
            # before the handshake is done: the certificate it sent, if any (transcript)
            subject = conn.identity.subject_cn if conn.identity else peer_subject_cn(conn.sock)
            log.warning("%s: closed: %s", netlog.who(conn.peer, subject), why)
        if abort:
            with contextlib.suppress(OSError, ValueError):
                conn.sock.send(pdu.abort(2, reason))
        with contextlib.suppress(OSError, ValueError):
            conn.sock.close()
        self.limits.leave(conn.host)
