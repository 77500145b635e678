"""The association server: TLS handshakes off the accepting thread, limits, clean shutdown.

pynetdicom's `AssociationServer.get_request()` runs the TLS handshake on the
single accepting thread with no time limit, and `socketserver` drops handshake
failures without a word (DESIGN.md section 4). `AssociationServer` here
accepts the raw socket only; each connection's worker thread sets
`TCP_NODELAY`, runs the handshake against an overall deadline
(`handshake_timeout`, trickling clients included), logs a failure with the
peer address, reason and hint and goes on serving; a success logs the peer
certificate once and attaches a `PeerIdentity` to the association
(`peer_identity(event.assoc)` in any handler).

More than `ae.maximum_associations` at once are refused by pynetdicom itself
with an A-ASSOCIATE-RJ (transient, service provider, local limit exceeded).

`WorklistManager` puts the store, the AE and the server together and handles
SIGINT/SIGTERM: stop accepting, let running associations finish (bounded),
close the database, return 0; a second signal exits at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import queue
import select
import signal
import socket
import ssl
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from socketserver import BaseServer
from typing import Any

from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

log = logging.getLogger("tdwii.serve")

HandshakeOk = Callable[[str, ssl.SSLSocket], None]
HandshakeFailed = Callable[[str, BaseException, str], None]


@dataclass(frozen=True)
class PeerIdentity:
    """Who is at the other end of one connection (certificate fields None without TLS)."""

    address: str
    subject_cn: str | None = None
    subject: str | None = None
    issuer: str | None = None
    fingerprint_sha256: str | None = None
    tls_version: str | None = None
    cipher: str | None = None


def peer_identity(assoc: Any) -> PeerIdentity | None:
    """The `PeerIdentity` of an acceptor association (None if it did not come through us)."""
    return getattr(assoc, "peer_identity", None)


def format_peer(address: Any) -> str:
    """'host:port' ('[v6]:port' for IPv6; IPv4-mapped IPv6 shown as IPv4)."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)


def _name(parts: Any) -> str:
    """RFC 4514-ish text of `ssl.getpeercert()`'s subject/issuer tuples."""
    return ",".join(f"{k}={v}" for rdn in reversed(parts or ()) for k, v in rdn)


def identity_of(sock: socket.socket, peer: str) -> PeerIdentity:
    """The `PeerIdentity` of a connected (possibly TLS) socket."""
    if not isinstance(sock, ssl.SSLSocket):
        return PeerIdentity(address=peer)
    der = sock.getpeercert(binary_form=True)
    info = sock.getpeercert() or {}
    cn = None
    for rdn in info.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                cn = value
    cipher = sock.cipher()
    return PeerIdentity(
        address=peer,
        subject_cn=cn,
        subject=_name(info.get("subject")) or None,
        issuer=_name(info.get("issuer")) or None,
        fingerprint_sha256=hashlib.sha256(der).hexdigest() if der else None,
        tls_version=sock.version(),
        cipher=cipher[0] if cipher else None,
    )


class HandshakeTimeout(TimeoutError):
    """The client did not complete the TLS handshake within the deadline."""


def handshake(sock: ssl.SSLSocket, timeout: float) -> None:
    """Run the server-side TLS handshake on `sock` within `timeout` seconds overall.

    A per-recv timeout would let a client that trickles one byte at a time hold
    the worker for ever; this uses one deadline for the whole handshake.
    """
    deadline = time.monotonic() + timeout
    sock.setblocking(False)
    try:
        while True:
            try:
                sock.do_handshake()
                return
            except ssl.SSLWantReadError:
                want_read = True
            except ssl.SSLWantWriteError:
                want_read = False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise HandshakeTimeout(
                    f"TLS handshake not completed within {timeout:g} s "
                    "(the client sent nothing, or too little)"
                )
            if want_read:
                select.select([sock], [], [], remaining)
            else:
                select.select([], [sock], [], remaining)
    finally:
        sock.setblocking(True)


# -- latency: wake pynetdicom's two reactor threads instead of letting them poll ----------
#
# pynetdicom runs two threads per association: the DUL reactor (socket <-> PDUs)
# sleeps 1 ms whenever it finds nothing to do, and the association reactor
# (DIMSE messages, release, abort) sleeps 1 ms per loop and polls its queues.
# Each request/response therefore waits for several of those naps (about 2.5 ms
# for a C-ECHO, 5 ms for association set-up). `tune_association` keeps
# pynetdicom's loops and state machine as they are and only changes what they
# wait on: the DUL blocks in select() on its socket plus a wake-up fd that every
# outgoing primitive signals, and the association reactor blocks on an event
# that incoming DIMSE messages, ACSE primitives and its checkpoint signal. Idle
# associations cost no CPU; both loops still wake every IDLE_WAIT seconds for
# their timers (ARTIM, network idle timeout, kill flags).

IDLE_WAIT = 0.05


class _Waker:
    """A file descriptor that select() sees readable after `wake()` (eventfd or a pipe)."""

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self.read_fd, self.write_fd = fd, fd
        else:  # pragma: no cover - non-Linux
            self.read_fd, self.write_fd = os.pipe()
            os.set_blocking(self.read_fd, False)
            os.set_blocking(self.write_fd, False)

    def wake(self) -> None:
        with contextlib.suppress(OSError):
            os.write(self.write_fd, b"\x01\0\0\0\0\0\0\0")

    def drain(self) -> None:
        with contextlib.suppress(OSError):
            os.read(self.read_fd, 4096)

    @staticmethod
    def close_fds(read_fd: int, write_fd: int) -> None:
        for fd in {read_fd, write_fd}:
            with contextlib.suppress(OSError):
                os.close(fd)


class _WakingQueue(queue.Queue):
    """A queue that calls `on_put()` after every put (under the queue's own lock)."""

    def __init__(self, on_put: Callable[[], None]) -> None:
        super().__init__()
        self._on_put = on_put

    def _put(self, item: Any) -> None:
        super()._put(item)
        self._on_put()


class _DimseQueue(_WakingQueue):
    """The DIMSE message queue: a non-blocking get() first waits (briefly) for activity."""

    def __init__(self, activity: threading.Event) -> None:
        super().__init__(activity.set)
        self._activity = activity

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        if not block and not self._qsize():
            self._activity.wait(IDLE_WAIT)
            self._activity.clear()
        return super().get(block, timeout)


class _Checkpoint(threading.Event):
    """The association reactor's pause checkpoint; any change also wakes the reactor."""

    def __init__(self, activity: threading.Event) -> None:
        super().__init__()
        self._activity = activity

    def set(self) -> None:
        super().set()
        self._activity.set()

    def clear(self) -> None:
        super().clear()
        self._activity.set()


class _WakingDUL(DULServiceProvider):
    """The DUL reactor, waiting in select() on its socket and its waker when idle."""

    _waker: _Waker

    def _is_transport_event(self) -> bool:
        if super()._is_transport_event():
            return True
        if self._kill_thread or not self.event_queue.empty() or self.to_provider_queue.qsize():
            return False
        assoc_socket = self.socket
        sock = assoc_socket.socket if assoc_socket is not None else None
        watched: list[Any] = [self._waker.read_fd] if sock is None else [sock, self._waker.read_fd]
        try:
            readable, _, _ = select.select(watched, [], [], IDLE_WAIT)
        except (OSError, ValueError):
            return False  # closed meanwhile: the next loop sees it
        if self._waker.read_fd in readable:
            self._waker.drain()
        return False

    def kill_dul(self) -> None:
        super().kill_dul()
        self._waker.wake()

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self._kill_thread = True
            self._waker.wake()
        return super().stop_dul()


class _ReactorClock:
    """`time` as pynetdicom.association sees it, minus one nap on our tuned threads.

    The association reactor begins every loop with `time.sleep(0.001)`; on an
    association made event-driven by `tune_association` the loop then blocks in
    the DIMSE queue until something happens, so that nap only delays the next
    request (the first DIMSE request after A-ASSOCIATE-AC, A-RELEASE-RQ after a
    response). Every other caller, and every other sleep, is left as it is.
    """

    def __getattr__(self, name: str) -> Any:
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        if seconds == 0.001 and getattr(threading.current_thread(), "_tdwii_tuned", False):
            return
        time.sleep(seconds)


def _install_reactor_clock() -> None:
    import pynetdicom.association as association_module

    if not isinstance(association_module.time, _ReactorClock):
        association_module.time = _ReactorClock()  # type: ignore[assignment]


def tune_association(assoc: Any) -> None:
    """Make an acceptor association event-driven (call before it starts; see above)."""
    dul = assoc.dul
    waker = _Waker()
    weakref.finalize(dul, _Waker.close_fds, waker.read_fd, waker.write_fd)
    dul.__class__ = _WakingDUL
    dul._waker = waker
    dul._run_loop_delay = 0
    dul.to_provider_queue = _WakingQueue(waker.wake)
    activity = threading.Event()
    dul.to_user_queue = _WakingQueue(activity.set)
    assoc.dimse.msg_queue = _DimseQueue(activity)
    checkpoint = _Checkpoint(activity)
    checkpoint.set()
    assoc._reactor_checkpoint = checkpoint
    assoc._tdwii_tuned = True
    _install_reactor_clock()


class _RequestHandler(RequestHandler):
    """pynetdicom's handler, plus the connection's `PeerIdentity` on the association."""

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        server: AssociationServer = self.server  # type: ignore[assignment]
        assoc.peer_identity = server.take_identity(self.request, self.client_address)
        if server.event_driven:
            tune_association(assoc)
        return assoc


class AssociationServer(ThreadedAssociationServer):
    """A pynetdicom association server with safe TLS handshakes (see the module docstring).

    Made with `ae.make_server(address, ssl_context=ctx, evt_handlers=...,
    server_class=AssociationServer, handshake_timeout=10, ...)`.
    """

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128

    def __init__(
        self,
        ae: Any,
        address: tuple[str, int] | tuple[str, int, int, int],
        ae_title: str,
        contexts: list,
        ssl_context: ssl.SSLContext | None = None,
        evt_handlers: list | None = None,
        *,
        handshake_timeout: float = 10.0,
        max_pending: int = 128,
        on_handshake_ok: HandshakeOk | None = None,
        on_handshake_failed: HandshakeFailed | None = None,
        set_nodelay: Callable[[socket.socket], None] | None = None,
        event_driven: bool = True,
    ) -> None:
        from tdwii_cli import netlog, tls

        self.on_handshake_ok = on_handshake_ok or netlog.log_handshake_ok
        self.on_handshake_failed = on_handshake_failed or netlog.log_handshake_failed
        self.set_nodelay = set_nodelay or tls.set_nodelay
        self.tls_context = ssl_context
        self.event_driven = event_driven
        self.handshake_timeout = handshake_timeout
        self.max_pending = max_pending
        self._pending = 0
        self._pending_lock = threading.Lock()
        self._identities: dict[int, PeerIdentity] = {}
        # pynetdicom would wrap (and handshake) on the accepting thread: give it no context.
        super().__init__(
            ae,
            address,
            ae_title,
            contexts,
            None,
            evt_handlers=evt_handlers,
            request_handler=_RequestHandler,
        )

    # -- accepting --------------------------------------------------------------

    def server_bind(self) -> None:
        """Bind; an IPv6 wildcard address also accepts IPv4 (dual stack)."""
        if self.address_family == socket.AF_INET6:
            with contextlib.suppress(OSError):  # a platform without dual stack
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept the TCP connection only; the handshake happens in the worker."""
        return self.socket.accept()

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """Refuse a connection when too many are still in their TLS handshake."""
        with self._pending_lock:
            if self._pending >= self.max_pending:
                log.warning(
                    "%s: connection refused, %d connections already in their TLS handshake",
                    format_peer(client_address),
                    self._pending,
                )
                return False
            self._pending += 1
        return True

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        """Per connection: TCP_NODELAY, TLS handshake with a deadline, then the association."""
        peer = format_peer(client_address)
        sock: socket.socket | None = request
        try:
            with contextlib.suppress(OSError):  # peer gone: the handshake will say so
                self.set_nodelay(request)
            if self.tls_context is not None:
                sock = self._tls(request, peer)
            else:
                self._identities[id(request)] = PeerIdentity(address=peer)
        finally:
            with self._pending_lock:
                self._pending -= 1
        if sock is None:
            return
        try:
            self.finish_request(sock, client_address)
        except Exception:
            log.exception("%s: association failed to start", peer)
            self._identities.pop(id(sock), None)
            self.shutdown_request(sock)

    def _tls(self, raw: socket.socket, peer: str) -> ssl.SSLSocket | None:
        assert self.tls_context is not None
        sock: ssl.SSLSocket | None = None
        try:
            sock = self.tls_context.wrap_socket(
                raw, server_side=True, do_handshake_on_connect=False
            )
            handshake(sock, self.handshake_timeout)
        except (OSError, ValueError) as exc:  # ssl.SSLError, TimeoutError are OSErrors
            try:
                self.on_handshake_failed(peer, exc, "server")
            except Exception:  # the log must never stop the server
                log.warning("%s: TLS handshake failed: %s", peer, exc)
            self.shutdown_request(sock if sock is not None else raw)
            return None
        try:
            self._identities[id(sock)] = identity_of(sock, peer)
            self.on_handshake_ok(peer, sock)
        except Exception as exc:  # pragma: no cover - logging problems only
            log.debug("%s: cannot describe the peer: %s", peer, exc)
        return sock

    def take_identity(self, request: Any, client_address: Any) -> PeerIdentity:
        """The identity recorded for `request` by the worker (removed from the table)."""
        found = self._identities.pop(id(request), None)
        return found or PeerIdentity(address=format_peer(client_address))

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One log line instead of socketserver's traceback on stderr."""
        log.error(
            "%s: connection error", format_peer(client_address), exc_info=log.isEnabledFor(10)
        )

    # -- stopping ---------------------------------------------------------------

    def shutdown(self) -> None:
        """Stop accepting and close the listening socket (running associations go on)."""
        BaseServer.shutdown(self)
        self.server_close()
        if self in getattr(self.ae, "_servers", []):
            self.ae._servers.remove(self)


@dataclass
class ServerSettings:
    """What `WorklistManager` needs (built from the effective `ServeConfig` by the command)."""

    ae_title: str = "UPSSCP"
    bind_address: str = ""
    port: int = 11112
    max_pdu: int = 16382
    acse_timeout: float | None = 30
    dimse_timeout: float | None = 30
    network_timeout: float | None = 60
    max_associations: int = 10
    handshake_timeout: float = 10.0
    database: Path = Path("tdwii.sqlite")
    shutdown_grace: float = 10.0


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


class WorklistManager:
    """The running worklist manager: store + AE + `AssociationServer` (+ signal handling)."""

    def __init__(
        self,
        settings: ServerSettings,
        ssl_context: ssl.SSLContext | None = None,
        *,
        config: Any = None,
        known_aes: dict[str, Any] | None = None,
        tls_options: Any = None,
    ) -> None:
        self.settings = settings
        self.tls_options = tls_options
        self.ctx: Any = None
        self.ssl_context = ssl_context
        self.config = config
        self.known_aes = known_aes or {}
        self.store: Any = None
        self.server: AssociationServer | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._signals = 0

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) actually listened on."""
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        """Open the store, bind the port and start accepting (in a background thread)."""
        from tdwii_cli.ups.service import ServiceContext, build_ae, build_handlers
        from tdwii_cli.ups.store import WorkitemStore

        s = self.settings
        self.store = WorkitemStore(s.database)
        try:
            ae = build_ae(
                s.ae_title,
                max_pdu=s.max_pdu,
                acse_timeout=s.acse_timeout,
                dimse_timeout=s.dimse_timeout,
                network_timeout=s.network_timeout,
                max_associations=s.max_associations,
            )
            ctx = ServiceContext(
                store=self.store, ae_title=s.ae_title, config=self.config, known_aes=self.known_aes
            )
            ctx.extra["tls_options"] = self.tls_options  # UPS event reports over mTLS
            self.ctx = ctx
            host = s.bind_address if s.bind_address not in ("", "*") else wildcard_address()
            address: tuple[str, int] | tuple[str, int, int, int] = (
                (host, s.port, 0, 0) if ":" in host else (host, s.port)
            )
            self.server = ae.make_server(
                address,
                ssl_context=self.ssl_context,
                evt_handlers=build_handlers(ctx),
                server_class=AssociationServer,
                handshake_timeout=s.handshake_timeout,
                max_pending=max(64, 4 * s.max_associations),
            )
        except BaseException:
            for hook in self.ctx.extra.get("on_stop", ()) if self.ctx is not None else ():
                hook()
            self.store.close()
            raise
        ae._servers.append(self.server)
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.2}, name="tdwii-accept"
        )
        self._thread.daemon = True
        self._thread.start()

    def stop(self, grace: float | None = None) -> None:
        """Stop accepting, wait up to `grace` s for running associations, abort the rest,
        close the database."""
        grace = self.settings.shutdown_grace if grace is None else grace
        server = self.server
        if server is not None:
            server.shutdown()
            deadline = time.monotonic() + grace
            running = server.active_associations
            if running:
                log.warning("waiting up to %g s for %d association(s)", grace, len(running))
            for assoc in running:
                assoc.join(max(0.0, deadline - time.monotonic()))
            for assoc in server.active_associations:
                log.warning("aborting association with %s", assoc.requestor.ae_title)
                assoc.abort()
            self.server = None
        for hook in self.ctx.extra.get("on_stop", ()) if self.ctx is not None else ():
            try:
                hook()
            except Exception as exc:  # pragma: no cover - shutdown must go on
                log.warning("while stopping: %s", exc)
        self.ctx = None
        if self.store is not None:
            self.store.close()
            self.store = None

    def request_stop(self) -> None:
        """Ask `wait()` to return (thread-safe; used by the signal handlers)."""
        self._stop.set()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        self._signals += 1
        if self._signals > 1:
            os.write(2, b"tdwii serve: second signal, exiting now\n")
            os._exit(128 + signum)
        log.warning(
            "%s received: stopping (send it again to exit at once)", signal.Signals(signum).name
        )
        self._stop.set()

    def serve_until_signal(self) -> int:
        """Block until SIGINT/SIGTERM, then stop cleanly; return the exit code (0)."""
        previous = {
            sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            while not self._stop.wait(0.5):
                pass
            self.stop()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return 0


def _listen_error(exc: OSError, host: str, port: int) -> Any:
    import errno

    from tdwii_cli.errors import TdwiiError

    where = f"{host or 'all interfaces'} port {port}"
    if exc.errno == errno.EADDRINUSE:
        return TdwiiError(
            f"cannot listen on {where}: the port is in use",
            hint="stop the other server or choose another --port",
        )
    if exc.errno == errno.EACCES:
        return TdwiiError(
            f"cannot listen on {where}: permission denied",
            hint="ports below 1024 need privileges; use 2762 (TLS) or 11112",
        )
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return TdwiiError(
            f"cannot listen on {where}: no such local address",
            hint="give an address of this host to --bind-address, or leave it out",
        )
    return TdwiiError(f"cannot listen on {where}: {exc.strerror or exc}")


_TLS_KEYS = ("mutual_tls", "ca_certificate", "certificate", "private_key")


def run_serve(
    command_line: dict[str, Any],
    tls_values: dict[str, Any],
    *,
    config_file: Path | None = None,
    log_options: Any = None,
) -> int:
    """`tdwii serve`: merge the configuration, start the worklist manager, serve until a signal."""
    from tdwii_cli import serveconfig
    from tdwii_cli.console import stderr_console
    from tdwii_cli.errors import TdwiiError
    from tdwii_cli.ups.store import StoreError

    ini = serveconfig.read_ini(config_file) if config_file is not None else None
    config = serveconfig.effective_config(ini, command_line)
    tls_options = serveconfig.resolve_tls(config, tls_values)
    known = (
        serveconfig.load_application_entities(config.ae_config)
        if config.ae_config is not None
        else {}
    )
    port = config.effective_port(tls_options.enabled)
    ssl_context = None
    if tls_options.enabled:
        from tdwii_cli import tls as tls_module

        ssl_context = tls_module.build_server_context(tls_options)

    mode = {"mtls": "mutual TLS", "tls": "TLS", "off": "no TLS"}[tls_options.mode]
    if log.isEnabledFor(logging.INFO):
        log.info("effective configuration%s:", f" ({config_file})" if config_file else "")
        for key, value, source in config.rows():
            if key in _TLS_KEYS:  # the effective TLS lines below say what is used
                continue
            if key == "port":
                value = str(port)
            log.info("  %-18s %-40s (%s)", key, value, source)
        log.info("  %-18s %s, profile %s", "tls", mode, tls_options.profile)
        if tls_options.enabled:
            log.info("  %-18s %s", "ca", ", ".join(str(p) for p in tls_options.ca))
            log.info("  %-18s %s", "certificate", tls_options.cert)
            log.info("  %-18s %s", "private key", tls_options.key)
        if known:
            log.info("  %-18s %s", "known AEs", ", ".join(sorted(known)))

    settings = ServerSettings(
        ae_title=config.ae_title,
        bind_address=config.bind_address,
        port=port,
        max_pdu=config.max_pdu,
        acse_timeout=config.acse_timeout,
        dimse_timeout=config.dimse_timeout,
        network_timeout=config.network_timeout,
        max_associations=config.max_associations,
        handshake_timeout=config.handshake_timeout,
        database=config.database_location,
    )
    manager = WorklistManager(
        settings, ssl_context, config=config, known_aes=known, tls_options=tls_options
    )
    try:
        manager.start()
    except StoreError as exc:
        raise TdwiiError(str(exc), hint="check --db (a writable file path)") from None
    except OSError as exc:
        raise _listen_error(exc, config.bind_address, port) from None
    except ValueError as exc:  # pynetdicom: a bad AE title or address
        raise TdwiiError(f"cannot start: {exc}".splitlines()[0]) from None
    host, bound_port = manager.address
    quiet = log_options is not None and log_options.level > logging.WARNING
    if not quiet:
        shown = f"[{host}]" if ":" in host else host
        stderr_console().print(
            f"tdwii serve: {config.ae_title} listening on {shown}:{bound_port} ({mode}), "
            f"database {config.database_location}; Ctrl-C to stop",
            highlight=False,
            markup=False,
            soft_wrap=True,
        )
    code = manager.serve_until_signal()
    log.info("stopped")
    return code
