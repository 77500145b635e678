"""The connection log (`tdwii_cli.net.log`): handshakes, associations, DIMSE lines, status
words, on the client and in `tdwii serve`'s log.

Real handshakes over loopback and real associations with `tdwii serve`; the
client's lines are captured from the `tdwii.net` logger, the server's from its log.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import tls_options
from peers import OneShotPeer
from tdwii_cli.cli.console import setup_logging
from tdwii_cli.dicom.status import format_status, status_text
from tdwii_cli.net import log as netlog
from tdwii_cli.net.association import open_association, propose
from tdwii_cli.net.dimse import C_ECHO_RQ, Command
from tdwii_cli.net.floodlog import MAX_NETWORKS, FloodLog, network_of
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.context import build_client_context, build_server_context

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


# ---------------------------------------------------------------------- status words


def test_status_words_from_pynetdicom_tables() -> None:
    assert format_status(0x0000) == "0x0000 (Success)"
    assert format_status(0xC309).startswith("0xC309 (Failure: ")
    assert "SCHEDULED" in status_text(0xC309)
    assert "Duplicat" in status_text(0x0111)
    assert status_text(0xB300).startswith("Warning")
    assert status_text(0xC123).startswith("Failure")  # a range, not a listed code
    assert status_text(0x1234) == "Unknown status"


# ---------------------------------------------------------------------- handshakes


def _tls_pair(pki_dir: Path) -> tuple[ssl.SSLSocket, ssl.SSLSocket, socket.socket]:
    server_ctx = build_server_context(tls_options(pki_dir, "server"))
    client_ctx = build_client_context(tls_options(pki_dir, "client"))
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
        netlog.handshake_ok("127.0.0.1:2762", client)
        netlog.handshake_ok("127.0.0.1:50000", server)
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
        netlog.handshake_ok("127.0.0.1:2762", client)
    finally:
        client.close()
        server.close()
        listener.close()
    detail = [r for r in lines.records if r.levelno == logging.DEBUG]
    assert len(detail) == 1
    text = detail[0].getMessage()
    assert "subject=" in text and "sans=" in text and "localhost" in text
    fingerprint = text.split("sha256=")[1]
    assert len(fingerprint) == 95  # all 32 bytes, colon-separated
    # the record carries the certificate, which a terminal shows as a table
    assert detail[0].certificate.subject_cn == "worklistmanager"  # type: ignore[attr-defined]


def test_handshake_ok_is_silent_by_default(pki_dir: Path, lines: Lines) -> None:
    lines.set_to(logging.WARNING)
    client, server, listener = _tls_pair(pki_dir)
    try:
        netlog.handshake_ok("127.0.0.1:2762", client)
    finally:
        client.close()
        server.close()
        listener.close()
    assert lines.records == []


def test_handshake_failed_one_warning_line(pki_dir: Path, lines: Lines) -> None:
    server = OneShotPeer(
        ssl_context=build_server_context(tls_options(pki_dir, "server")), read=0, hang_up=True
    )
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        error = server.done(5)
    assert error is not None
    netlog.handshake_failed("127.0.0.1:40000", error, side="server")
    warnings = [r for r in lines.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    text = warnings[0].getMessage()
    assert text.startswith("127.0.0.1:40000: TLS handshake failed: ")
    assert "does not speak TLS" in text and "\n" not in text
    assert warnings[0].exc_info is None  # no traceback


# ---------------------------------------------------------------------- associations


def test_association_lines_on_both_sides(tdwii_server, serve_workdir: Path, lines: Lines):  # type: ignore[no-untyped-def]
    """The client logs what the peer accepted and refused; the server logs the association and
    each DIMSE message with its status and round trip, with the same words."""
    ctx = build_client_context(tls_options(serve_workdir / "certs", "client"))
    options = ScuOptions(calling_aet="LOGTEST", connect_timeout=5, dimse_timeout=5)
    start = len(tdwii_server.log_text())
    with open_association(
        "localhost",
        tdwii_server.port,
        ctx,
        options,
        propose([VERIFICATION, CT_STORAGE]),
        required=[VERIFICATION],
    ) as assoc:
        sock = assoc.sock
        assert isinstance(sock, ssl.SSLSocket)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1  # no Nagle stalls
        request = Command(C_ECHO_RQ, message_id=assoc.next_message_id(), sop_class=VERIFICATION)
        (reply,) = assoc.request(request, None, assoc.context(VERIFICATION))
        assert reply.command.status == 0
    text = lines.text()
    assert f"localhost:{tdwii_server.port}: association accepted, LOGTEST -> ANY-SCP" in text
    assert re.search(r"accepted  Verification  (Implicit|Explicit) VR LE", text)
    # rejected contexts by name too, like the accepted ones (the UID stays for the unusual)
    assert f"rejected  CT Image Storage ({CT_STORAGE})  (abstract syntax not supported)" in text
    assert "association released" in text
    served = tdwii_server.wait_log("association released", start)
    assert "association accepted, LOGTEST -> ANY-SCP" in served
    assert f"rejected  CT Image Storage ({CT_STORAGE})  (abstract syntax not supported)" in served
    assert "received C-ECHO-RQ id=1" in served
    rsp = [line for line in served.splitlines() if "sent C-ECHO-RSP" in line]
    assert len(rsp) == 1 and "status 0x0000 (Success) in " in rsp[0] and rsp[0].endswith(" ms")


def test_abort_is_logged_by_the_server(tdwii_server, serve_workdir: Path):  # type: ignore[no-untyped-def]
    ctx = build_client_context(tls_options(serve_workdir / "certs", "client"))
    start = len(tdwii_server.log_text())
    with (
        pytest.raises(RuntimeError),
        open_association(
            "localhost", tdwii_server.port, ctx, ScuOptions(), propose([VERIFICATION])
        ),
    ):
        raise RuntimeError("the body fails: the association is aborted")
    assert "association aborted" in tdwii_server.wait_log("association aborted", start)


def test_peer_text_is_escaped_in_log_lines(lines: Lines) -> None:
    netlog.association_accepted("127.0.0.1:1", "EVIL\x1b[31m\n", "UPSSCP", 0, [])
    text = lines.text()
    assert "\x1b" not in text and "\n" not in text.split("accepted, ")[1]
    assert "EVIL\\x1b[31m\\n" in text


def test_pynetdicom_noise_is_folded() -> None:
    setup_logging(logging.INFO)
    assert not logging.getLogger("pynetdicom").isEnabledFor(logging.ERROR)
    setup_logging(logging.DEBUG, debug=True)
    assert logging.getLogger("pynetdicom").isEnabledFor(logging.INFO)


# -- warnings a flood repeats ----------------------------------------------------------------


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _flood(level: int = logging.INFO) -> tuple[FloodLog, _Records, list[float]]:
    logger = logging.getLogger(f"tdwii.test.flood.{id(object())}")
    logger.propagate = False
    logger.setLevel(level)
    records = _Records()
    logger.addHandler(records)
    now = [100.0]
    return FloodLog(logger, interval=10.0, clock=lambda: now[0]), records, now


def test_a_flood_is_told_once_per_network_then_counted_per_interval() -> None:
    flood, records, now = _flood()
    for i in range(300):
        flood.warning("closed before their handshake", f"127.0.4.{i % 50}:{1000 + i}", "%d", i)
    flood.warning("closed before their handshake", "[::1]:5", "v6")
    assert records.lines == ["0", "v6"]  # one line per network so far
    now[0] += 10
    flood.tick()
    assert records.lines[2:] == [
        "299 more connections from 127.0.4.0/24 closed before their handshake in the last 10 s"
    ]
    flood.tick()
    assert len(records.lines) == 3  # nothing more to tell


def test_many_networks_share_one_line_beyond_the_first_few() -> None:
    flood, records, now = _flood()
    for net in range(40):
        flood.warning("failed their TLS handshake", f"10.{net}.0.1:1", "net %d", net)
    assert len(records.lines) == MAX_NETWORKS
    now[0] += 10
    flood.tick()
    assert records.lines[-1] == (
        f"{40 - MAX_NETWORKS} connections from {40 - MAX_NETWORKS} other networks failed "
        "their TLS handshake in the last 10 s"
    )


def test_debug_and_interval_zero_log_every_warning() -> None:
    flood, records, _ = _flood(logging.DEBUG)
    for _ in range(5):
        flood.warning("x", "127.0.0.1:1", "line")
    assert records.lines == ["line"] * 5
    quiet, records, _ = _flood()
    every = FloodLog(quiet.log, interval=0)
    for _ in range(3):
        every.warning("x", "127.0.0.1:1", "line")
    assert records.lines == ["line"] * 3


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("127.0.4.9:104", "127.0.4.0/24"),
        ("[2001:db8::1]:104", "2001:db8::/64"),
        ("[::ffff:10.1.2.3]:7", "10.1.2.0/24"),
        ("10.9.8.7", "10.9.8.0/24"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_networks_are_a_24_or_a_64(address: str, network: str) -> None:
    assert network_of(address) == network
