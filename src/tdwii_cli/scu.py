"""Shared client code: associate over (m)TLS, TCP_NODELAY, the connection log, exit codes.

pynetdicom swallows a failed TLS handshake inside its association thread; the
client context made here records the real `ssl` error (and whether it came
from the TCP connect, the handshake or the first read) so the user gets the
reason in plain words and the right exit code.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Sequence
from typing import Any

from tdwii_cli import exitcodes
from tdwii_cli import tls as _tls
from tdwii_cli.errors import TdwiiError
from tdwii_cli.netlog import association_handlers, format_status, status_text
from tdwii_cli.tlsoptions import TlsOptions

__all__ = ["associate", "dimse_exit_code", "format_status", "status_text"]

# Explicit VR Little Endian first: datasets read from Part 10 files go out without re-encoding.
TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


class _RecordingSocket(ssl.SSLSocket):
    """An SSLSocket that notes its first failure, and in which phase, on its context."""

    def _note(self, phase: str, exc: OSError) -> None:
        ctx = self.context
        if isinstance(ctx, ClientContext) and ctx.failure is None:
            ctx.failure = (phase, exc)

    def do_handshake(self, *args: Any, **kwargs: Any) -> None:
        try:
            super().do_handshake(*args, **kwargs)
        except OSError as exc:
            self._note("handshake", exc)
            raise

    def connect(self, address: Any) -> None:
        try:
            super().connect(address)
        except OSError as exc:
            self._note("connect", exc)  # the handshake's own failure was noted first
            raise

    def recv(self, *args: Any, **kwargs: Any) -> bytes:
        try:
            return super().recv(*args, **kwargs)
        except ssl.SSLError as exc:  # TLS 1.3: the server's verdict on our certificate
            self._note("read", exc)
            raise


class ClientContext(ssl.SSLContext):
    """A client SSLContext whose sockets record why they failed (see `_RecordingSocket`)."""

    sslsocket_class = _RecordingSocket
    failure: tuple[str, OSError] | None = None


def client_context(opts: TlsOptions) -> ClientContext:
    """The shared TLS client context, as a `ClientContext`."""
    return _tls.build_client_context(opts, ClientContext)  # type: ignore[return-value]


def _nodelay(event: Any) -> None:
    sock = event.assoc.dul.socket.socket if event.assoc.dul.socket else None
    if sock is not None:
        _tls.set_nodelay(sock)
    event.assoc._tdwii_opened = True


def _probe(host: str, port: int, timeout: float | None) -> OSError | None:
    """Why a plain TCP connection to host:port fails now, or None when it works."""
    try:
        with socket.create_connection((host, port), timeout=timeout or 10):
            return None
    except OSError as exc:
        return exc


def _unreachable(peer: str, exc: BaseException) -> TdwiiError:
    words = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if isinstance(exc, (socket.timeout, TimeoutError)):
        words = "connection timed out"
    return TdwiiError(
        f"cannot reach {peer}: {words}",
        exitcodes.UNREACHABLE,
        hint="is the server running, and are the host and port right?",
    )


def associate(
    host: str,
    port: int,
    *,
    tls: TlsOptions,
    calling_aet: str = "TDWII",
    called_aet: str = "ANY-SCP",
    contexts: Sequence[str] = ("1.2.840.10008.1.1",),
    acse_timeout: float | None = 30,
    dimse_timeout: float | None = 30,
    network_timeout: float | None = 60,
    connect_timeout: float | None = 10,
    max_pdu: int = 0,
) -> Any:
    """An established pynetdicom Association to host:port, or a `TdwiiError`.

    Exit codes: 60 unreachable, 61 rejected / no context accepted, 62 aborted or
    closed, 63 TLS handshake failed.
    """
    from pynetdicom import AE, evt

    peer = f"{host}:{port}"
    ae = AE(calling_aet)
    for uid in contexts:
        ae.add_requested_context(uid, TRANSFER_SYNTAXES)
    ae.acse_timeout = acse_timeout
    ae.dimse_timeout = dimse_timeout
    ae.network_timeout = network_timeout
    ae.connection_timeout = connect_timeout
    ctx: ClientContext | None = client_context(tls) if tls.enabled else None
    tls_args = (ctx, host) if ctx is not None else None
    handlers: list[Any] = [(evt.EVT_CONN_OPEN, _nodelay), *association_handlers()]
    assoc = ae.associate(
        host, port, ae_title=called_aet, max_pdu=max_pdu, tls_args=tls_args, evt_handlers=handlers
    )
    if assoc.is_established:
        assoc.dul._run_loop_delay = 0.0002  # pynetdicom naps 1 ms per loop by default
        keep_responses_for_the_caller(assoc)
        if not assoc.accepted_contexts:
            assoc.release()
            raise TdwiiError(
                f"{called_aet}@{peer} accepted none of our presentation contexts",
                exitcodes.ASSOC_REJECTED,
                hint="is it the right kind of DICOM node?",
            )
        return assoc
    if assoc.is_rejected:
        prim = assoc.acceptor.primitive
        why = ""
        if prim is not None:
            why = f": {getattr(prim, 'reason_str', '')} ({getattr(prim, 'result_str', '')})"
        raise TdwiiError(
            f"association rejected by {called_aet}@{peer}{why}",
            exitcodes.ASSOC_REJECTED,
            hint="check -aec/-aet and the server's limits",
        )
    if assoc.is_aborted and assoc.rejected_contexts and not assoc.accepted_contexts:
        # pynetdicom aborts at once when the peer accepted the association but no context
        why = ", ".join(sorted({cx.status for cx in assoc.rejected_contexts}))
        raise TdwiiError(
            f"{called_aet}@{peer} accepted none of our presentation contexts ({why})",
            exitcodes.ASSOC_REJECTED,
            hint="is it the right kind of DICOM node?",
        )
    failure = ctx.failure if ctx is not None else None
    if failure is not None:
        phase, exc = failure
        if phase == "connect" and not isinstance(exc, ssl.SSLError):
            raise _unreachable(peer, exc)
        raise tls_handshake_error(peer, exc)
    if not getattr(assoc, "_tdwii_opened", False):
        raise _unreachable(
            peer, _probe(host, port, connect_timeout) or ConnectionError("the connection failed")
        )
    if assoc.is_aborted:
        hint = "does the server expect TLS (--mtls)?" if ctx is None else "see the server's log"
        raise TdwiiError(f"{peer} aborted the association", exitcodes.ASSOC_ABORTED, hint=hint)
    raise TdwiiError(
        f"{peer} closed the connection before answering the association request",
        exitcodes.ASSOC_ABORTED,
        hint="does the server expect TLS (--mtls)? see its log"
        if ctx is None
        else "see the server's log",
    )


def _is_response(item: Any) -> bool:
    primitive = item[1] if isinstance(item, tuple) and len(item) == 2 else None
    return primitive is not None and getattr(primitive, "Status", None) is not None


def keep_responses_for_the_caller(assoc: Any) -> None:
    """Guard against pynetdicom's lost-response race (DESIGN.md section 7).

    `Association.send_*()` pauses the association reactor, sends the request and
    blocks on the DIMSE queue. The pause is only checked through a flag that the
    reactor clears *after* it wakes, so right after one exchange the next send may
    start while the reactor is still waking up; that reactor then polls the queue
    (`get_msg(block=False)`) and takes the fast peer's response for an unsolicited
    request, and the caller waits for its DIMSE timeout and aborts. Here the
    non-blocking poll leaves responses where the waiting caller will find them
    (a subclass of the association's own DIMSE provider).
    """
    dimse = assoc.dimse
    base = type(dimse)
    if getattr(base, "_tdwii_guard", False):
        return
    guarded = _GUARDED.get(base)
    if guarded is None:

        class _ResponseKeepingDIMSE(base):  # type: ignore[misc,valid-type]
            _tdwii_guard = True

            def get_msg(self, block: bool = False) -> Any:
                if not block:
                    try:
                        first = self.msg_queue.queue[0]
                    except IndexError:
                        return None, None
                    if _is_response(first):
                        return None, None  # the send_*() call blocked on the queue takes it
                return super().get_msg(block)

        guarded = _GUARDED[base] = _ResponseKeepingDIMSE
    dimse.__class__ = guarded


_GUARDED: dict[type, type] = {}


def tls_handshake_error(peer: str, exc: BaseException) -> TdwiiError:
    """The one-line error for a failed client handshake (exit code 63)."""
    return _tls.handshake_error(peer, exc, side="client")


def dimse_exit_code(status: int | None) -> int:
    """0 for success, DIMSE_FAILURE for warnings and failures, ASSOC_ABORTED for no answer."""
    if status is None:
        return exitcodes.ASSOC_ABORTED
    return exitcodes.OK if status == 0 else exitcodes.DIMSE_FAILURE
