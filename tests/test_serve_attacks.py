"""`tdwii serve --mtls` attacked as a hostile peer would: stalls, floods, lying lengths,
garbage. Each attack is bounded in time, and during each one a legitimate
`tdwii echo --mtls` from another loopback address (127.0.0.2) succeeds promptly.
"""

from __future__ import annotations

import contextlib
import re
import signal
import socket
import sqlite3
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from conftest import (
    PKI_CLIENT,
    TdwiiServer,
    client_ssl_context,
    mtls_args,
    run_echo_cli,
    start_tdwii_server,
    tls_options,
    wait_until,
)
from tdwii_cli.dicom import codec
from tdwii_cli.dicom.uids import EXPLICIT_VR_LE, UPS_PUSH, VERIFICATION
from tdwii_cli.net import dimse, errors, pdu
from tdwii_cli.net.association import Association, open_association, propose
from tdwii_cli.net.channel import PduStream, read_pdu
from tdwii_cli.net.dimse import Command
from tdwii_cli.net.errors import PeerClosed
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.context import build_client_context
from tdwii_cli.ups.workitem import build_workitem

DEADLINE = 2.0  # -ta, -td and the handshake timeout of the attacked server
LIMITS = ["--max-associations", "6", "--max-associations-per-host", "3"]
# repeated warnings are counted and told every second (a flood's log is bounded)
ARGS = ["--handshake-timeout", "2", "-ta", "2", "-td", "2", "-tn", "30", "--log-summary", "1"]
ARGS += LIMITS


OTHER_DEVICE = "clients/otherdevice/otherdevice"  # a second client certificate: another device


@pytest.fixture(scope="module")
def server(serve_workdir: Path) -> Iterator[TdwiiServer]:
    subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "pki", "issue", "client", "otherdevice", "-q"],
        cwd=serve_workdir,
        check=True,
        capture_output=True,
    )
    srv = start_tdwii_server(serve_workdir, *ARGS, log_name="attacked")
    try:
        yield srv
    finally:
        srv.stop()


def certs(server: TdwiiServer) -> Path:
    return server.workdir / "certs"


def legit_echo(server: TdwiiServer, source: str = "127.0.0.2") -> float:
    """`tdwii echo --mtls` from `source` with another device's certificate than the attacks
    use; asserts success and returns the seconds it took."""
    begin = time.monotonic()
    proc = run_echo_cli(
        *mtls_args(certs(server), OTHER_DEVICE),
        "-sa",
        source,
        "-to",
        "5",
        server.host,
        str(server.port),
    )
    took = time.monotonic() - begin
    assert proc.returncode == 0, proc.stderr
    assert "status 0x0000" in proc.stdout
    return took


def tls_connect(server: TdwiiServer, node: str | None = PKI_CLIENT) -> ssl.SSLSocket:
    ctx = client_ssl_context(certs(server), node)
    raw = socket.create_connection((server.host, server.port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost")


ECHO_CONTEXT = [pdu.PresentationContext(1, VERIFICATION, (EXPLICIT_VR_LE,))]


def associate_raw(server: TdwiiServer, calling: str = "ATTACKER") -> ssl.SSLSocket | None:
    """An mTLS connection with an accepted association (raw socket), or None if rejected."""
    sock = tls_connect(server)
    sock.sendall(pdu.associate_rq(calling, "UPSSCP", ECHO_CONTEXT))
    kind, _ = read_pdu(sock)
    if kind != pdu.A_ASSOCIATE_AC:
        sock.close()
        return None
    return sock


def ends_with_abort(sock: socket.socket, timeout: float) -> bool:
    """Whether the server sends an A-ABORT (or closes) within `timeout` seconds."""
    sock.settimeout(timeout)
    try:
        kind, _ = read_pdu(sock)
        return kind == pdu.A_ABORT
    except (PeerClosed, ConnectionError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def told(text: str, line: str, what: str) -> int:
    """How many events a log tells: lines with `line`, plus the counts of summary lines
    ("N more connections from NETWORK ...`what`...")."""
    total = text.count(line)
    for match in re.finditer(r"(\d+) more connections? from \S+ (.*) in the last", text):
        if what in match.group(2):
            total += int(match.group(1))
    return total


def rss_kb(server: TdwiiServer) -> int:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def threads(server: TdwiiServer) -> int:
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads")


def n_create(assoc: Association, ds: Dataset, data: bytes) -> int:
    """N-CREATE of `ds` (encoded as `data`) on `assoc`; the response's status."""
    rq = Command(
        dimse.N_CREATE_RQ,
        message_id=assoc.next_message_id(),
        sop_class=UPS_PUSH,
        sop_instance=str(ds.SOPInstanceUID),
        has_dataset=True,
    )
    (reply,) = list(assoc.request(rq, data, assoc.context(UPS_PUSH)))
    return int(reply.command.status or 0)


# -- stalls -------------------------------------------------------------------------------


def test_associations_stalled_mid_pdu_are_aborted_and_others_get_in(server: TdwiiServer) -> None:
    start = len(server.log_text())
    stalled = []
    for _ in range(6):  # --max-associations of them; 3 get a slot (per host), 3 are refused
        sock = associate_raw(server)
        if sock is not None:
            sock.sendall(struct.pack(">BBL", pdu.P_DATA_TF, 0, 1000) + b"\0" * 10)
            stalled.append(sock)
    assert len(stalled) == 3
    assert legit_echo(server) < 3
    begin = time.monotonic()
    for sock in stalled:
        assert ends_with_abort(sock, DEADLINE + 3)
        sock.close()
    assert time.monotonic() - begin < DEADLINE + 3
    text = server.wait_log("PDU deadline of 2 s passed", start)
    assert "(workitemcreator): association aborted: PDU deadline" in text
    wait_until(
        lambda: told(server.log_text()[start:], "association aborted: PDU", "aborted") == 3,
        5,
        "three aborts told (the first in full, the others counted)",
    )
    assert "association rejected: local limit exceeded" in text
    assert legit_echo(server, "127.0.0.1") < 3  # the slots are free again


def test_connections_stalled_before_their_request_are_closed(server: TdwiiServer) -> None:
    start = len(server.log_text())
    half = pdu.associate_rq("ATTACKER", "UPSSCP", ECHO_CONTEXT)
    stalled = [tls_connect(server) for _ in range(10)]
    for sock in stalled[:5]:
        sock.sendall(half[:20])  # half an A-ASSOCIATE-RQ; the others send nothing at all
    assert legit_echo(server) < 3
    for sock in stalled:
        assert ends_with_abort(sock, DEADLINE + 3)
        sock.close()
    text = server.wait_log("A-ASSOCIATE-RQ not completed within 2 s", start)
    wait_until(
        lambda: (
            told(
                server.log_text()[start:],
                "A-ASSOCIATE-RQ not completed within 2 s",
                "did not complete their A-ASSOCIATE-RQ within 2 s",
            )
            == 10
        ),
        5,
        "ten ARTIM expiries told (the first in full, the others counted)",
    )
    assert "(workitemcreator): closed:" in text


def test_unauthenticated_flood_from_one_host_refuses_no_one_else(server: TdwiiServer) -> None:
    start = len(server.log_text())
    stop = threading.Event()
    opened = [0]

    def flood() -> None:
        socks: list[socket.socket] = []
        while not stop.is_set():
            while len(socks) < 300 and not stop.is_set():
                try:
                    sock = socket.create_connection((server.host, server.port), timeout=2)
                    sock.send(b"\x16\x03\x01\x00")  # the start of a ClientHello, never finished
                except OSError:
                    break
                socks.append(sock)
                opened[0] += 1
            alive = []
            for sock in socks:  # reconnect whatever the server closed
                sock.setblocking(False)
                try:
                    gone = sock.recv(1) == b""
                except BlockingIOError:
                    gone = False
                except OSError:
                    gone = True
                if gone:
                    sock.close()
                else:
                    alive.append(sock)
            socks = alive
            time.sleep(0.05)
        for sock in socks:
            sock.close()

    thread = threading.Thread(target=flood, daemon=True)
    thread.start()
    try:
        wait_until(lambda: opened[0] >= 300, 10, "the flood to open 300 connections")
        most = 0
        for _ in range(3):
            assert legit_echo(server) < 3
            most = max(most, threads(server))
        assert most < 30  # waiting connections cost no thread each
    finally:
        stop.set()
        thread.join(10)
    assert opened[0] > 300  # kept up by reconnecting
    text = server.log_text()[start:]
    assert "127.0.0.1: connection refused: 16 connections from this host are not associated" in text
    assert text.count("connection refused") < 20  # rate-limited, not one line per attempt


# -- lying lengths and big messages ---------------------------------------------------------


def test_pdata_claiming_4_gb_is_aborted_after_its_header(server: TdwiiServer) -> None:
    before = rss_kb(server)
    sock = associate_raw(server)
    assert sock is not None
    sock.sendall(struct.pack(">BBL", pdu.P_DATA_TF, 0, 0xFFFFFFF0))
    sent = 0
    with contextlib.suppress(OSError):
        for _ in range(400):  # keep streaming: none of it may be buffered
            sock.sendall(b"\0" * 65536)
            sent += 65536
    assert ends_with_abort(sock, 5)
    sock.close()
    assert sent < 64 << 20
    assert rss_kb(server) - before < 20_000
    assert "over our maximum 16382" in server.log_text()
    assert legit_echo(server) < 3


def test_n_create_over_the_message_limit_is_refused_not_buffered(serve_workdir: Path) -> None:
    srv = start_tdwii_server(serve_workdir, "--max-message-size", "100000", log_name="msglimit")
    try:
        options = ScuOptions(called_aet="UPSSCP")
        ctx = build_client_context(tls_options(certs(srv), "client"))
        ds = build_workitem(patient_id="BIG", patient_name="Big^Message", label="big")
        ds.PatientComments = "x" * 300_000
        data = codec.encode(ds, EXPLICIT_VR_LE)
        with open_association(
            srv.host, srv.port, ctx, options, propose([UPS_PUSH, VERIFICATION])
        ) as assoc:
            assert n_create(assoc, ds, data) == 0x0213
            echo = Command(
                dimse.C_ECHO_RQ, message_id=assoc.next_message_id(), sop_class=VERIFICATION
            )
            (answer,) = list(assoc.request(echo, None, assoc.context(VERIFICATION)))
            assert answer.command.status == 0  # the association goes on
        assert "over the 100000-byte message limit" in srv.log_text()
    finally:
        assert srv.stop() == 0
    with sqlite3.connect(srv.db) as conn:
        assert (
            conn.execute("SELECT count(*) FROM workitems WHERE patient_id='BIG'").fetchone()[0] == 0
        )


# -- garbage and malformed fields -----------------------------------------------------------


def _element(elem: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0, elem, len(value)) + value


def _command_set(*elements: bytes) -> bytes:
    body = b"".join(elements)
    return _element(0x0000, struct.pack("<L", len(body))) + body


def _send_command(sock: ssl.SSLSocket, command: bytes) -> None:
    sock.sendall(pdu.p_data(1, command, None, 16384))


def test_multi_valued_command_field_is_aborted_and_the_server_goes_on(
    server: TdwiiServer,
) -> None:
    start = len(server.log_text())
    sock = associate_raw(server)
    assert sock is not None
    uid = VERIFICATION.encode() + b"\0"
    bad = _command_set(
        _element(0x0002, uid),
        _element(0x0100, struct.pack("<HH", dimse.C_ECHO_RQ, dimse.C_ECHO_RQ)),
        _element(0x0110, struct.pack("<H", 1)),
        _element(0x0800, struct.pack("<H", dimse.NO_DATASET)),
    )
    _send_command(sock, bad)
    assert ends_with_abort(sock, 3)
    sock.close()
    text = server.wait_log("is not one US value", start)
    assert "association aborted" in text and "Traceback" not in text
    assert legit_echo(server, "127.0.0.1") < 3


def test_unknown_pdu_type_with_trailing_bytes_is_aborted(server: TdwiiServer) -> None:
    start = len(server.log_text())
    sock = associate_raw(server)
    assert sock is not None
    sock.sendall(b"\x42\x00\x00\x00\x00\x04" + b"junk" + b"\xff" * 100)
    sock.settimeout(3)
    kind, payload = read_pdu(sock)
    assert kind == pdu.A_ABORT and payload[2:4] == bytes((2, errors.ABORT_UNRECOGNIZED_PDU))
    sock.close()
    assert "unknown PDU type 0x42" in server.wait_log("unknown PDU type", start)


def test_control_characters_in_the_calling_ae_title_are_refused_and_escaped(
    server: TdwiiServer,
) -> None:
    start = len(server.log_text())
    sock = tls_connect(server)
    sock.sendall(pdu.associate_rq("EVIL\x1b[31m\n", "UPSSCP", ECHO_CONTEXT))
    sock.settimeout(3)
    kind, payload = read_pdu(sock)
    sock.close()
    assert kind == pdu.A_ASSOCIATE_RJ and tuple(payload[1:4]) == (1, 1, 3)
    text = server.wait_log("association rejected: the calling AE title", start)
    assert "\x1b" not in text
    assert "EVIL\\x1b[31m\\n" in text


def test_a_malformed_associate_rq_is_aborted(server: TdwiiServer) -> None:
    sock = tls_connect(server)
    good = pdu.associate_rq("ATTACKER", "UPSSCP", ECHO_CONTEXT)
    broken = bytearray(good)
    broken[6 + 68 + 2 : 6 + 68 + 4] = b"\xff\xff"  # the first item claims 65535 bytes
    sock.sendall(bytes(broken))
    assert ends_with_abort(sock, 3)
    sock.close()
    assert "malformed A-ASSOCIATE-RQ" in server.wait_log("malformed A-ASSOCIATE-RQ")


@pytest.mark.parametrize(
    ("uid", "why"),
    [("1." + "2" * 70, "over 64 characters"), ("1.2.3\\1.2.4", "two values")],
)
def test_bad_requested_uids_are_c307_not_an_abort(server: TdwiiServer, uid: str, why: str) -> None:
    from tdwii_cli.dicom.uids import UPS_PULL

    sock = tls_connect(server)
    contexts = [pdu.PresentationContext(1, UPS_PULL, (EXPLICIT_VR_LE,))]
    sock.sendall(pdu.associate_rq("ATTACKER", "UPSSCP", contexts))
    assert read_pdu(sock)[0] == pdu.A_ASSOCIATE_AC
    raw_uid = uid.encode() + (b"\0" if len(uid) % 2 else b"")
    get = _command_set(
        _element(0x0003, UPS_PULL.encode() + b"\0" * (len(UPS_PULL) % 2)),
        _element(0x0100, struct.pack("<H", dimse.N_GET_RQ)),
        _element(0x0110, struct.pack("<H", 7)),
        _element(0x0800, struct.pack("<H", dimse.NO_DATASET)),
        _element(0x1001, raw_uid),
    )
    _send_command(sock, get)
    sock.settimeout(3)
    message = PduStream(sock).read_message()
    assert message.command.status == 0xC307, why
    assert message.command.responding_to == 7
    sock.sendall(pdu.RELEASE_RQ)
    assert read_pdu(sock)[0] == pdu.A_RELEASE_RP
    sock.close()


def test_require_called_aet_refuses_another_title(serve_workdir: Path) -> None:
    srv = start_tdwii_server(serve_workdir, "--require-called-aet", log_name="calledaet")
    try:
        sock = tls_connect(srv)
        sock.sendall(pdu.associate_rq("TDD", "ANY-SCP", ECHO_CONTEXT))
        kind, payload = read_pdu(sock)
        sock.close()
        assert kind == pdu.A_ASSOCIATE_RJ and tuple(payload[1:4]) == (1, 1, 7)
        assert "called AE title is not ours (UPSSCP)" in srv.log_text()
        proc = run_echo_cli(*mtls_args(certs(srv)), "-aec", "UPSSCP", srv.host, str(srv.port))
        assert proc.returncode == 0, proc.stderr
    finally:
        assert srv.stop() == 0


# -- shutdown -------------------------------------------------------------------------------


def test_sigterm_with_stalled_peers_exits_within_the_grace(serve_workdir: Path) -> None:
    srv = start_tdwii_server(serve_workdir, *ARGS, "--shutdown-grace", "2", log_name="stalled")
    peers: list[socket.socket] = []
    try:
        mid_pdu = associate_raw(srv)
        assert mid_pdu is not None
        mid_pdu.sendall(struct.pack(">BBL", pdu.P_DATA_TF, 0, 1 << 20) + b"\0" * 100)
        idle = associate_raw(srv)
        assert idle is not None
        raw = socket.create_connection((srv.host, srv.port))  # in its handshake
        peers += [mid_pdu, idle, raw]
        time.sleep(0.3)
        begin = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(2 + 1.5) == 0
        assert time.monotonic() - begin < 3.5
        assert ends_with_abort(idle, 1)
    finally:
        for sock in peers:
            sock.close()
        if srv.proc.poll() is None:
            srv.proc.kill()
    assert "association aborted: the server is stopping" in srv.log_text()


# -- the idle timer is for idle associations only ------------------------------------------


def test_a_c_find_streaming_longer_than_the_idle_timeout_is_not_cut(serve_workdir: Path) -> None:
    from tdwii_cli.dicom.uids import UPS_PULL

    srv = start_tdwii_server(serve_workdir, "-tn", "0.5", db=serve_workdir / "stream.sqlite")
    try:
        ctx = build_client_context(tls_options(certs(srv), "client"))
        options = ScuOptions(called_aet="UPSSCP")
        with open_association(
            srv.host, srv.port, ctx, options, propose([UPS_PUSH, UPS_PULL])
        ) as assoc:
            for i in range(200):
                ds = build_workitem(patient_id=f"STREAM-{i}", patient_name="S^T", label="s")
                assert n_create(assoc, ds, codec.encode(ds, EXPLICIT_VR_LE)) == 0
            query = Dataset()
            query.PatientID = "STREAM-*"
            query.ProcedureStepState = ""
            find = Command(
                dimse.C_FIND_RQ,
                message_id=assoc.next_message_id(),
                sop_class=UPS_PULL,
                priority=0,
                has_dataset=True,
            )
            begin = time.monotonic()
            pending = 0
            cx = assoc.context(UPS_PULL)
            for message in assoc.request(find, codec.encode(query, cx.transfer_syntax), cx):
                if message.command.status == 0xFF00:
                    pending += 1
                    time.sleep(0.005)  # a slow reader: the stream takes ~1 s
                else:
                    assert message.command.status == 0
            assert pending == 200
            assert time.monotonic() - begin > 0.9
    finally:
        assert srv.stop() == 0


def test_control_characters_in_command_uids_are_escaped_in_the_log(server: TdwiiServer) -> None:
    start = len(server.log_text())
    sock = tls_connect(server)
    contexts = [pdu.PresentationContext(1, UPS_PUSH, (EXPLICIT_VR_LE,))]
    sock.sendall(pdu.associate_rq("ATTACKER", "UPSSCP", contexts))
    assert read_pdu(sock)[0] == pdu.A_ASSOCIATE_AC
    evil = b"1.2\x1b[31m\nFAKE LINE"
    create = _command_set(
        _element(0x0002, evil + b"\0" * (len(evil) % 2)),
        _element(0x0100, struct.pack("<H", dimse.N_CREATE_RQ)),
        _element(0x0110, struct.pack("<H", 3)),
        _element(0x0800, struct.pack("<H", 0)),
    )
    data = codec.encode(build_workitem(patient_id="E", patient_name="E^E", label="e"))
    sock.sendall(pdu.p_data(1, create, data, 16384))
    sock.settimeout(3)
    assert PduStream(sock).read_message().command.status == 0x0118  # no such SOP Class
    sock.close()
    text = server.wait_log("is not UPS Push", start)
    assert "\x1b" not in text and "\nFAKE LINE" not in text
    assert "1.2\\x1b[31m\\nFAKE LINE" in text


def test_a_requestor_that_does_not_wait_for_the_ac_is_served_in_order(
    server: TdwiiServer,
) -> None:
    sock = tls_connect(server)
    echo = Command(dimse.C_ECHO_RQ, message_id=5, sop_class=VERIFICATION)
    rq = pdu.associate_rq("EAGER", "UPSSCP", ECHO_CONTEXT)
    sock.sendall(rq + dimse.encode_message(1, echo, None, 16384) + pdu.RELEASE_RQ)
    sock.settimeout(3)
    assert read_pdu(sock)[0] == pdu.A_ASSOCIATE_AC
    answer = PduStream(sock).read_message().command
    assert (answer.status, answer.responding_to) == (0, 5)
    assert read_pdu(sock)[0] == pdu.A_RELEASE_RP
    sock.close()
