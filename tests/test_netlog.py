"""The connection log (tdwii_cli.netlog) and the shared pynetdicom client (tdwii_cli.scu).

Real handshakes over loopback and real associations with `tdwii serve` or an
in-process pynetdicom AE; the log lines are captured from the `tdwii.net` logger.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tdwii_cli import exitcodes, netlog, scu, tls
from tdwii_cli.console import setup_logging
from tdwii_cli.errors import TdwiiError
from tdwii_cli.tlsoptions import TlsOptions

SERVER = "servers/worklistmanager/worklistmanager"
CLIENT = "clients/workitemcreator/workitemcreator"
VERIFICATION = "1.2.840.10008.1.1"
CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


class Lines(logging.Handler):
    """Collects formatted records of the `tdwii` loggers."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def set_to(self, level: int, debug: bool = False) -> None:
        """Set up logging as `-q/-v/-d` would, keeping this handler attached."""
        setup_logging(level, debug)
        logging.getLogger("tdwii").addHandler(self)

    def text(self, level: int = logging.DEBUG) -> str:
        return "\n".join(r.getMessage() for r in self.records if r.levelno >= level)


@pytest.fixture()
def lines() -> Iterator[Lines]:
    """Logging as `-v` sets it up, plus a collecting handler on `tdwii`."""
    handler = Lines()
    handler.set_to(logging.INFO)
    try:
        yield handler
    finally:
        logging.getLogger("tdwii").removeHandler(handler)
        setup_logging(logging.WARNING)


def client_opts(certs: Path, mode: str = "mtls", node: str = CLIENT, ca: Path | None = None):
    with_cert = mode == "mtls"
    return TlsOptions(
        role="client",
        mode=mode,  # type: ignore[arg-type]
        ca=(ca or certs / "rootCA/rootCA.pem",),
        cert=certs / f"{node}.pem" if with_cert else None,
        key=certs / f"{node}.key" if with_cert else None,
    )


def server_opts(certs: Path) -> TlsOptions:
    return TlsOptions(
        role="server",
        mode="mtls",
        ca=(certs / "rootCA/rootCA.pem",),
        cert=certs / f"{SERVER}.pem",
        key=certs / f"{SERVER}.key",
    )


# ---------------------------------------------------------------------- status words


def test_status_words_from_pynetdicom_tables() -> None:
    assert netlog.format_status(0x0000) == "0x0000 (Success)"
    assert netlog.format_status(0xC309).startswith("0xC309 (Failure: ")
    assert "SCHEDULED" in netlog.status_text(0xC309)
    assert "Duplicat" in netlog.status_text(0x0111)
    assert netlog.status_text(0xB300).startswith("Warning")
    assert netlog.status_text(0xC123).startswith("Failure")  # a range, not a listed code
    assert netlog.status_text(0x1234) == "Unknown status"
    assert scu.status_text is netlog.status_text


def test_dimse_exit_codes() -> None:
    assert scu.dimse_exit_code(0) == exitcodes.OK
    assert scu.dimse_exit_code(0xB300) == exitcodes.DIMSE_FAILURE
    assert scu.dimse_exit_code(0xC309) == exitcodes.DIMSE_FAILURE
    assert scu.dimse_exit_code(None) == exitcodes.ASSOC_ABORTED


# ---------------------------------------------------------------------- handshakes


def _tls_pair(pki_dir: Path) -> tuple[ssl.SSLSocket, ssl.SSLSocket, socket.socket]:
    server_ctx = tls.build_server_context(server_opts(pki_dir))
    client_ctx = tls.build_client_context(client_opts(pki_dir))
    listener = socket.create_server(("127.0.0.1", 0))
    result: dict[str, ssl.SSLSocket] = {}

    def accept() -> None:
        conn, _ = listener.accept()
        result["server"] = server_ctx.wrap_socket(conn, server_side=True)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    raw = socket.create_connection(listener.getsockname()[:2], timeout=5)
    client = client_ctx.wrap_socket(raw, server_hostname="localhost")
    thread.join(5)
    return client, result["server"], listener


def test_handshake_ok_short_line_at_v(pki_dir: Path, lines: Lines) -> None:
    client, server, listener = _tls_pair(pki_dir)
    try:
        netlog.log_handshake_ok("127.0.0.1:2762", client)
        netlog.log_handshake_ok("127.0.0.1:50000", server)
    finally:
        client.close()
        server.close()
        listener.close()
    first, second = [r.getMessage() for r in lines.records]
    assert first.startswith("127.0.0.1:2762: TLS handshake ok, TLSv1.3 TLS_AES_")
    assert "ALPN dicom" in first
    assert "CN=worklistmanager" in first and "issuer=tdwii Root CA" in first
    assert "until 20" in first and " d)" in first
    assert "sha256=" in first and len(first.split("sha256=")[1]) == 23  # a prefix, not all of it
    assert "CN=workitemcreator" in second  # the server sees the client's certificate
    # nothing from the full table at -v
    assert not any(r.levelno == logging.DEBUG for r in lines.records)


def test_handshake_ok_full_certificate_at_d(pki_dir: Path, lines: Lines) -> None:
    lines.set_to(logging.DEBUG, debug=True)  # stderr is not a terminal here: plain lines
    client, server, listener = _tls_pair(pki_dir)
    try:
        netlog.log_handshake_ok("127.0.0.1:2762", client)
    finally:
        client.close()
        server.close()
        listener.close()
    detail = [r.getMessage() for r in lines.records if r.levelno == logging.DEBUG]
    assert len(detail) == 1
    assert "subject=" in detail[0] and "sans=" in detail[0] and "localhost" in detail[0]
    fingerprint = detail[0].split("sha256=")[1]
    assert len(fingerprint) == 95  # all 32 bytes, colon-separated


def test_handshake_ok_is_silent_by_default(pki_dir: Path, lines: Lines) -> None:
    lines.set_to(logging.WARNING)
    client, server, listener = _tls_pair(pki_dir)
    try:
        netlog.log_handshake_ok("127.0.0.1:2762", client)
    finally:
        client.close()
        server.close()
        listener.close()
    assert lines.records == []


def test_handshake_failed_one_warning_line(pki_dir: Path, lines: Lines) -> None:
    server_ctx = tls.build_server_context(server_opts(pki_dir))
    listener = socket.create_server(("127.0.0.1", 0))
    seen: dict[str, BaseException] = {}

    def accept() -> None:
        conn, _ = listener.accept()
        try:
            server_ctx.wrap_socket(conn, server_side=True)
        except OSError as exc:
            seen["exc"] = exc
        finally:
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    with socket.create_connection(listener.getsockname()[:2], timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        thread.join(5)
    listener.close()
    netlog.log_handshake_failed("127.0.0.1:40000", seen["exc"], side="server")
    warnings = [r for r in lines.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert text.startswith("127.0.0.1:40000: TLS handshake failed: ")
    assert "does not speak TLS" in text and "\n" not in text
    assert warnings[0].exc_info is None  # no traceback


# ---------------------------------------------------------------------- associations (scu)


def test_association_log_against_tdwii_serve(tdwii_server, serve_workdir: Path, lines: Lines):  # type: ignore[no-untyped-def]
    opts = client_opts(serve_workdir / "certs")
    assoc = scu.associate(
        "localhost",
        tdwii_server.port,
        tls=opts,
        contexts=(VERIFICATION, CT_STORAGE),
        calling_aet="LOGTEST",
    )
    try:
        sock = assoc.dul.socket.socket
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1  # no Nagle stalls
        status = assoc.send_c_echo()
        assert status.Status == 0
    finally:
        assoc.release()
    text = lines.text()
    assert f"127.0.0.1:{tdwii_server.port}: association accepted, LOGTEST -> ANY-SCP" in text
    assert re.search(r"accepted  Verification  (Implicit|Explicit) VR LE", text)
    assert f"rejected  {CT_STORAGE}  (Abstract Syntax Not Supported)" in text
    assert "sent C-ECHO-RQ id=1" in text
    rsp = [line for line in text.splitlines() if "received C-ECHO-RSP" in line]
    assert len(rsp) == 1 and "status 0x0000 (Success) in " in rsp[0] and rsp[0].endswith(" ms")
    assert "association released" in text
    assert not netlog._pending  # every request got its answer and was forgotten


def test_abort_is_logged(tdwii_server, serve_workdir: Path, lines: Lines):  # type: ignore[no-untyped-def]
    assoc = scu.associate("localhost", tdwii_server.port, tls=client_opts(serve_workdir / "certs"))
    assoc.abort()
    assert "association aborted" in lines.text(logging.WARNING)


@pytest.mark.parametrize("round_", [1, 2, 3])
def test_many_echoes_on_one_association_none_lost(tdwii_server, serve_workdir: Path, round_: int):  # type: ignore[no-untyped-def]
    """The pynetdicom client against a fast peer: no C-ECHO response may go missing.

    Without `scu.keep_responses_for_the_caller` about 4 in 10 runs of 1000 lost one
    (the association reactor took it) and waited for the DIMSE timeout, then aborted."""
    setup_logging(logging.WARNING)
    assoc = scu.associate(
        "localhost", tdwii_server.port, tls=client_opts(serve_workdir / "certs"), dimse_timeout=5
    )
    start = time.monotonic()
    try:
        statuses = []
        for _ in range(1000):
            rsp = assoc.send_c_echo()
            statuses.append(rsp.Status if "Status" in rsp else None)
    finally:
        if assoc.is_established:
            assoc.release()
    elapsed = time.monotonic() - start
    assert statuses == [0] * 1000
    assert elapsed < 30, f"1000 echoes took {elapsed:.1f} s (a lost response waits for -td)"


def test_reactor_poll_leaves_responses_for_the_waiting_caller(tdwii_server, serve_workdir: Path):  # type: ignore[no-untyped-def]
    """The guard itself, deterministically: the reactor's non-blocking poll does not take a
    response off the DIMSE queue; the blocking get of the send_*() caller does."""
    from pynetdicom.dimse_primitives import C_ECHO

    assoc = scu.associate("localhost", tdwii_server.port, tls=client_opts(serve_workdir / "certs"))
    try:
        assert getattr(type(assoc.dimse), "_tdwii_guard", False)
        rsp = C_ECHO()
        rsp.MessageIDBeingRespondedTo = 7
        rsp.Status = 0x0000
        request = C_ECHO()
        request.MessageID = 8
        assoc._reactor_checkpoint.clear()  # keep the real reactor out of this
        while not assoc._is_paused:
            time.sleep(0.001)
        assoc.dimse.msg_queue.put((1, rsp))
        assert assoc.dimse.get_msg(block=False) == (None, None)
        assert assoc.dimse.msg_queue.qsize() == 1
        assert assoc.dimse.get_msg(block=True) == (1, rsp)
        assoc.dimse.msg_queue.put((1, request))  # a request from the peer is still served
        assert assoc.dimse.get_msg(block=False) == (1, request)
        assoc._reactor_checkpoint.set()
    finally:
        assoc.release()


def test_scu_closed_port_is_60(pki_dir: Path) -> None:
    from conftest import free_port

    with pytest.raises(TdwiiError) as info:
        scu.associate("127.0.0.1", free_port(), tls=client_opts(pki_dir))
    assert info.value.exit_code == exitcodes.UNREACHABLE
    assert "cannot reach 127.0.0.1:" in info.value.message


def test_scu_untrusted_client_is_63_with_the_reason(
    tdwii_server, serve_workdir: Path, other_ca_pki: Path
):  # type: ignore[no-untyped-def]
    opts = client_opts(other_ca_pki, ca=serve_workdir / "certs/rootCA/rootCA.pem")
    with pytest.raises(TdwiiError) as info:
        scu.associate("localhost", tdwii_server.port, tls=opts)
    assert info.value.exit_code == exitcodes.TLS_HANDSHAKE
    assert info.value.message.startswith(f"TLS handshake with localhost:{tdwii_server.port} failed")
    assert "CA the peer does not trust" in info.value.message


def test_scu_server_from_untrusted_ca_is_63(tdwii_server, other_ca_pki: Path):  # type: ignore[no-untyped-def]
    with pytest.raises(TdwiiError) as info:
        scu.associate("localhost", tdwii_server.port, tls=client_opts(other_ca_pki))
    assert info.value.exit_code == exitcodes.TLS_HANDSHAKE
    assert "untrusted CA" in info.value.message


def test_scu_no_client_certificate_is_63(tdwii_server, serve_workdir: Path):  # type: ignore[no-untyped-def]
    with pytest.raises(TdwiiError) as info:
        scu.associate(
            "localhost", tdwii_server.port, tls=client_opts(serve_workdir / "certs", "tls")
        )
    assert info.value.exit_code == exitcodes.TLS_HANDSHAKE
    assert "client certificate" in info.value.message


def test_scu_plain_dicom_to_tls_port_is_62(tdwii_server):  # type: ignore[no-untyped-def]
    with pytest.raises(TdwiiError) as info:
        scu.associate("127.0.0.1", tdwii_server.port, tls=TlsOptions(role="client"))
    assert info.value.exit_code == exitcodes.ASSOC_ABORTED
    assert "TLS" in info.value.hint


@pytest.fixture()
def picky_ae() -> Iterator[int]:
    """An in-process pynetdicom Verification SCP that insists on its own AE title."""
    from pynetdicom import AE

    ae = AE("PICKY")
    ae.require_called_aet = True
    ae.add_supported_context(VERIFICATION)
    server = ae.start_server(("127.0.0.1", 0), block=False)
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def test_scu_rejected_is_61(picky_ae: int, lines: Lines) -> None:
    with pytest.raises(TdwiiError) as info:
        scu.associate("127.0.0.1", picky_ae, tls=TlsOptions(role="client"), called_aet="WRONG")
    assert info.value.exit_code == exitcodes.ASSOC_REJECTED
    assert "association rejected by WRONG@127.0.0.1" in info.value.message
    assert "Called AE title not recognised" in info.value.message
    assert "association rejected" in lines.text(logging.WARNING)


def test_scu_no_context_accepted_is_61(picky_ae: int) -> None:
    with pytest.raises(TdwiiError) as info:
        scu.associate(
            "127.0.0.1",
            picky_ae,
            tls=TlsOptions(role="client"),
            called_aet="PICKY",
            contexts=(CT_STORAGE,),
        )
    assert info.value.exit_code == exitcodes.ASSOC_REJECTED
    assert "accepted none of our presentation contexts" in info.value.message


def test_pynetdicom_noise_is_folded() -> None:
    setup_logging(logging.INFO)
    assert not logging.getLogger("pynetdicom").isEnabledFor(logging.ERROR)
    setup_logging(logging.DEBUG, debug=True)
    assert logging.getLogger("pynetdicom").isEnabledFor(logging.INFO)
    setup_logging(logging.WARNING)
    assert netlog.association_handlers() == []  # no per-message work below -v
