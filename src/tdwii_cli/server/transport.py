"""The pynetdicom association server, made safe: TLS handshakes off the accepting thread,
with an overall deadline, every failure logged, limits, clean stop.

pynetdicom's `AssociationServer.get_request()` runs the TLS handshake on the
single accepting thread with no time limit, and `socketserver` drops handshake
failures without a word. `AssociationServer` here accepts the raw socket only;
each connection's worker thread sets `TCP_NODELAY`, runs the handshake against
an overall deadline (`handshake_timeout`, trickling clients included), logs a
failure with the peer address, reason and advice and goes on serving; a success
logs the peer certificate once and attaches the connection's `PeerIdentity` to
the association (`peer_identity(assoc)`).

More than `ae.maximum_associations` at once are refused by pynetdicom itself
with an A-ASSOCIATE-RJ (transient, service provider, local limit exceeded).
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import ssl
import threading
import time
from socketserver import BaseServer
from typing import Any

from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

from tdwii_cli.net import log as netlog
from tdwii_cli.net.sockets import format_peer, set_nodelay
from tdwii_cli.server.pynetdicom_tuning import tune_association
from tdwii_cli.tls.peer import PeerIdentity, identity_of

log = logging.getLogger("tdwii.serve")


def peer_identity(assoc: Any) -> PeerIdentity | None:
    """The `PeerIdentity` of an acceptor association (None if it did not come through us)."""
    return getattr(assoc, "peer_identity", None)


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


class _RequestHandler(RequestHandler):
    """pynetdicom's handler, plus the connection's `PeerIdentity` on the association, which
    is made event-driven (`tune_association`)."""

    def _create_association(self) -> Any:
        assoc = super()._create_association()
        server: AssociationServer = self.server  # type: ignore[assignment]
        identity = server.take_identity(self.request, self.client_address)
        setattr(assoc, "peer_identity", identity)  # noqa: B010 (read by `peer_identity`)
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
        contexts: list[Any],
        ssl_context: ssl.SSLContext | None = None,
        evt_handlers: list[Any] | None = None,
        *,
        handshake_timeout: float = 10.0,
        max_pending: int = 128,
    ) -> None:
        self.tls_context = ssl_context
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
        assert self.socket is not None
        if self.address_family == socket.AF_INET6:
            with contextlib.suppress(OSError):  # a platform without dual stack
                self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def get_request(self) -> tuple[socket.socket, Any]:
        """Accept the TCP connection only; the handshake happens in the worker."""
        assert self.socket is not None
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
                set_nodelay(request)
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
                netlog.handshake_failed(peer, exc, "server")
            except Exception:  # the log must never stop the server
                log.warning("%s: TLS handshake failed: %s", peer, exc)
            self.shutdown_request(sock if sock is not None else raw)
            return None
        try:
            self._identities[id(sock)] = identity_of(sock, peer)
            netlog.handshake_ok(peer, sock)
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
