"""Peers the tests talk to: pynetdicom as a foreign node (with its own guard), hand-written
sockets, and a TLS handshake with both ends in this process.

- `scu_association(server, *sop_classes)`: pynetdicom as an SCU to `tdwii serve` (a
  `TdwiiServer`), over mutual TLS with the `tdwii pki init` client certificate (or plain),
  TCP_NODELAY, every DIMSE message it receives kept in `assoc.responses`, and the guard
  `keep_responses_for_the_caller` below applied.
- `EventReceiver`: pynetdicom as a UPS Event SCP (the receiver of N-EVENT-REPORTs), plain or
  mutual TLS; records every report (`Report`: type, UID, information, who sent it over
  which TLS version) and waits for one.
- `OneShotPeer`: one scripted connection on a loopback port (a TLS handshake as the
  server, read a request, send fixed bytes, hang up or wait for the client to) recording
  what happened.
- `handshake(server_ctx, client_ctx)`: one TLS connection over loopback, both ends here; an
  `Outcome` of what each side saw.

`keep_responses_for_the_caller(assoc)` works around a race in pynetdicom's
client: `Association.send_*()` pauses the association reactor, sends the
request and blocks on the DIMSE queue. The pause is only checked through a flag
that the reactor clears *after* it wakes, so right after one exchange the next
send may start while the reactor is still waking up; that reactor then polls the
queue (`get_msg(block=False)`) and takes a fast peer's response for an
unsolicited request, and the caller waits for its DIMSE timeout and aborts.
Here the non-blocking poll leaves responses where the waiting caller will find
them (a subclass of the association's own DIMSE provider).
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from conftest import PKI_CLIENT, client_ssl_context, wait_until

UPS_EVENT = "1.2.840.10008.5.1.4.34.6.4"
# An A-ABORT PDU (source: service provider): what a plain DICOM node answers a ClientHello with
A_ABORT = b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00"


# -- the guard on pynetdicom's client -------------------------------------------------------


def _is_response(item: Any) -> bool:
    primitive = item[1] if isinstance(item, tuple) and len(item) == 2 else None
    return primitive is not None and getattr(primitive, "Status", None) is not None


_GUARDED: dict[type, type] = {}


def keep_responses_for_the_caller(assoc: Any) -> None:
    """Make pynetdicom association `assoc` keep responses for the `send_*()` caller."""
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


# -- pynetdicom as an SCU to tdwii serve ----------------------------------------------------


@contextmanager
def scu_association(
    server: Any,
    *sop_classes: str,
    ae_title: str = "TESTSCU",
    called_aet: str = "ANY-SCP",
    tls: bool = True,
    timeout: float = 10.0,
    guard: bool = True,
    node: str = PKI_CLIENT,
) -> Iterator[Any]:
    """A pynetdicom association from `ae_title` to `server` (`host`, `port`, `workdir` with
    `certs/` from `tdwii pki init`) proposing `sop_classes`: mutual TLS with `node`'s
    certificate (the PKI's client; plain DICOM when not `tls`), TCP_NODELAY, timeouts of
    `timeout` s, received DIMSE messages in `assoc.responses`, and (when `guard` and the
    association is established) `keep_responses_for_the_caller`. Yielded whether or not it
    was established (check `is_established`, `is_rejected`); released at the end if it
    still is."""
    ae = AE(ae_title)
    for uid in sop_classes:
        ae.add_requested_context(uid)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    responses: list[Any] = []

    def nodelay(event: Any) -> None:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def keep(event: Any) -> None:
        responses.append(event.message)

    tls_args = (client_ssl_context(server.workdir / "certs", node), "localhost") if tls else None
    assoc = ae.associate(
        server.host,
        server.port,
        ae_title=called_aet,
        tls_args=tls_args,
        evt_handlers=[(evt.EVT_CONN_OPEN, nodelay), (evt.EVT_DIMSE_RECV, keep)],
    )
    assoc.responses = responses
    if guard and assoc.is_established:
        keep_responses_for_the_caller(assoc)  # pynetdicom may otherwise lose a fast response
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


# -- pynetdicom as a UPS Event SCP (N-EVENT-REPORT receiver) --------------------------------


@dataclass
class Report:
    """One N-EVENT-REPORT as an `EventReceiver` got it."""

    event_type: int
    uid: str
    info: Dataset
    peer_cn: str | None  # the sender's certificate CN; None: not TLS
    tls_version: str | None
    at: float

    @property
    def state(self) -> str:
        """The Procedure Step State in the event information ("" when there is none)."""
        return str(self.info.get("ProcedureStepState", ""))


class EventReceiver:
    """A pynetdicom UPS Event SCP on 127.0.0.1:`port` (0: an ephemeral port, see `.port`):
    plain DICOM, or TLS with `ssl_context` (a server context, e.g. `server_ssl_context`, that
    requires the sender's certificate). Answers every N-EVENT-REPORT with Success and keeps
    it in `reports`."""

    def __init__(self, ae_title: str, ssl_context: ssl.SSLContext | None = None, port: int = 0):
        self.ae_title = ae_title
        self.reports: list[Report] = []
        self._lock = threading.Lock()
        ae = AE(ae_title)
        ae.add_supported_context(UPS_EVENT)
        ae.network_timeout = ae.acse_timeout = ae.dimse_timeout = 10
        self.server = ae.start_server(
            ("127.0.0.1", port),
            block=False,
            ssl_context=ssl_context,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)],
        )
        self.port = int(self.server.server_address[1])

    def _on_report(self, event: Any) -> tuple[int, None]:
        sock = event.assoc.dul.socket.socket
        cn = version = None
        if isinstance(sock, ssl.SSLSocket):
            version = sock.version()
            for rdn in (sock.getpeercert() or {}).get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        cn = value
        report = Report(
            int(event.request.EventTypeID),
            str(event.request.AffectedSOPInstanceUID),
            event.event_information,
            cn,
            version,
            time.monotonic(),
        )
        with self._lock:
            self.reports.append(report)
        return 0x0000, None

    def seen(self) -> list[Report]:
        """A copy of the reports received so far, in order."""
        with self._lock:
            return list(self.reports)

    def wait_for(self, what: Callable[[Report], bool], timeout: float = 15.0) -> Report:
        """The first report for which `what` is true, once there is one."""

        def got() -> str:
            seen = [(r.event_type, r.uid[-12:], r.state) for r in self.seen()]
            return f"an event report at {self.ae_title}; got {seen}"

        def first() -> Report | None:
            return next((r for r in self.seen() if what(r)), None)

        return wait_until(first, timeout, got, interval=0.005)

    def event(self, uid: str, event_type: int, timeout: float = 15.0) -> Report:
        return self.wait_for(lambda r: r.event_type == event_type and r.uid == uid, timeout)

    def state_report(self, uid: str, state: str, timeout: float = 15.0) -> Report:
        """The State Report (event type 1) for `uid` announcing `state`."""
        return self.wait_for(lambda r: _is_state(r, uid, state), timeout)

    def got_state(self, uid: str, state: str) -> bool:
        return any(_is_state(r, uid, state) for r in self.seen())

    def stop(self) -> None:
        self.server.shutdown()


def _is_state(report: Report, uid: str, state: str) -> bool:
    return report.event_type == 1 and report.uid == uid and report.state == state


# -- hand-written socket peers --------------------------------------------------------------


def recv_exactly(conn: socket.socket, count: int) -> bytes:
    out = b""
    while len(out) < count:
        chunk = conn.recv(count - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


class OneShotPeer:
    """One connection accepted on `host` (a loopback address), scripted, in a thread.

    In order: a TLS handshake as the server when `ssl_context` is given (`tls_version`);
    reading the request (`read`: up to that many bytes in one `recv`, 0 for nothing, or
    "pdu" for one whole DICOM PDU); sending `answer` when given (one byte every `drip`
    seconds if given, until the client hangs up); then hanging up at once
    when `hang_up`, else waiting (up to `timeout`) for the client to hang up, recorded in
    `closed_after` (seconds from the answer). A socket or TLS error ends the script and is
    kept in `error`; `done()` waits for the script and returns it.
    """

    def __init__(
        self,
        answer: bytes | None = None,
        *,
        ssl_context: ssl.SSLContext | None = None,
        read: int | str = 65536,
        hang_up: bool = False,
        host: str = "127.0.0.1",
        timeout: float = 10.0,
        drip: float = 0.0,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self.listener = socket.create_server((host, 0), family=family)
        self.listener.settimeout(10)
        self.port = int(self.listener.getsockname()[1])
        self.answer = answer
        self.ssl_context = ssl_context
        self.read = read
        self.hang_up = hang_up
        self.timeout = timeout
        self.drip = drip  # seconds between the bytes of `answer` (0: all at once)
        self.tls_version: str | None = None
        self.closed_after: float | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            raw, _ = self.listener.accept()
        except OSError as exc:
            self.error = exc
            return
        conn: socket.socket = raw
        try:
            raw.settimeout(self.timeout)
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(raw, server_side=True)
                self.tls_version = conn.version()  # type: ignore[attr-defined]
            self._script(conn)
        except OSError as exc:  # ssl.SSLError included
            self.error = exc
        finally:
            conn.close()
            raw.close()

    def _script(self, conn: socket.socket) -> None:
        if self.read == "pdu":
            header = recv_exactly(conn, 6)  # then all of it: no RST when we close
            recv_exactly(conn, int.from_bytes(header[2:6], "big"))
        elif self.read:
            conn.recv(int(self.read))
        start = time.monotonic()
        if self.answer is not None and self.drip:
            for i in range(len(self.answer)):  # the peer's own pace: one byte at a time
                try:
                    conn.sendall(self.answer[i : i + 1])
                except OSError:
                    break
                time.sleep(self.drip)
            start = time.monotonic()
        elif self.answer is not None:
            conn.sendall(self.answer)
        if self.hang_up:
            return
        try:
            while conn.recv(4096):
                pass
        except OSError:
            pass
        self.closed_after = time.monotonic() - start

    def done(self, timeout: float = 15.0) -> BaseException | None:
        """Wait for the script to end (it must, within `timeout`) and stop listening; the
        error it met, if any."""
        self.thread.join(timeout)
        self.listener.close()
        assert not self.thread.is_alive(), f"the peer on port {self.port} did not finish"
        return self.error


@dataclass
class Outcome:
    """What each end of one loopback handshake saw."""

    server_error: BaseException | None = None
    client_error: BaseException | None = None
    server_sock_info: tuple[str | None, str | None, str | None] | None = None
    client_info: tuple[str | None, str | None, str | None] | None = None
    client_cn: str | None = None  # the CN of the client's certificate, as the server saw it


def handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    server_hostname: str = "localhost",
    timeout: float = 5.0,
) -> Outcome:
    """One TLS connection over 127.0.0.1 (`server_hostname` is what the client checks); the
    client reads once after the handshake so that a TLS 1.3 server's verdict on the client
    certificate (sent after the client's Finished) reaches it. Each side's (version, cipher,
    ALPN) is recorded, the client's only once data went both ways; both sides must finish."""
    out = Outcome()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(timeout)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError as exc:
            out.server_error = exc
            return
        conn.settimeout(timeout)
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                out.server_sock_info = (s.version(), s.cipher()[0], s.selected_alpn_protocol())
                subject = (s.getpeercert() or {}).get("subject", ())
                names = [v for rdn in subject for k, v in rdn if k == "commonName"]
                out.client_cn = names[0] if names else None
                s.sendall(b"ok")
                s.recv(2)
        except (OSError, ssl.SSLError) as exc:
            if out.server_sock_info is None:
                out.server_error = exc
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as c:
                info = (c.version(), c.cipher()[0], c.selected_alpn_protocol())
                if c.recv(2) != b"ok":
                    raise ConnectionResetError("closed after the handshake")
                out.client_info = info
                c.sendall(b"ok")
        except (OSError, ssl.SSLError) as exc:
            out.client_error = exc
        finally:
            raw.close()
    finally:
        thread.join(timeout + 2)
        listener.close()
    assert not thread.is_alive(), "the server side of the handshake did not finish"
    return out
