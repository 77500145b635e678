"""`tdwii serve` end to end: the real server in a subprocess on a loopback port, real mTLS,
real peers (DCMTK echoscu, openssl s_client, pynetdicom), the real SQLite file.

TLS refusals are checked here as the server logs them and survives them; their words on
both sides are tested at the library level in tests/test_tls.py."""

from __future__ import annotations

import copy
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from conftest import (
    PKI_CA,
    PKI_CLIENT,
    PKI_SERVER,
    TdwiiServer,
    free_port,
    openssl_client,
    require_tool,
    start_tdwii_server,
    wait_until,
)
from peers import scu_association
from tdwii_cli.ups.workitem import build_workitem

UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
VERIFICATION = "1.2.840.10008.1.1"
# relative to a serve folder (`certs/` from `tdwii pki init`), for command lines and the INI
CLIENT = f"certs/{PKI_CLIENT}"
CA = f"certs/{PKI_CA}"


def associate(server: TdwiiServer, tls: bool = True) -> Any:
    """A pynetdicom association (Verification + UPS Push; mutual TLS unless not `tls`)."""
    return scu_association(server, VERIFICATION, UPS_PUSH, tls=tls)


def echo_works(server: TdwiiServer) -> bool:
    with associate(server) as assoc:
        if not assoc.is_established:
            return False
        status = assoc.send_c_echo()
        return bool(status) and status.Status == 0


def workitem(**changes: Any) -> Dataset:
    ds = build_workitem(patient_id="PAT-1", patient_name="Test^Serve", label="Fx 1")
    for keyword, value in changes.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return ds


def n_create(assoc: Any, ds: Dataset, uid: str | None = "same") -> tuple[int, str | None]:
    """(status, Affected SOP Instance UID of the response)."""
    instance = ds.SOPInstanceUID if uid == "same" else uid
    payload = copy.deepcopy(ds)
    for keyword in ("SOPClassUID", "SOPInstanceUID"):
        if keyword in payload:
            delattr(payload, keyword)
    before = len(assoc.responses)
    status, _ = assoc.send_n_create(payload, UPS_PUSH, instance)
    rsp = assoc.responses[before:][-1]
    return int(status.Status), rsp.command_set.get("AffectedSOPInstanceUID")


def stored(server: TdwiiServer, uid: str) -> Dataset | None:
    from tdwii_cli.server.store import WorkitemStore

    with WorkitemStore(server.db) as store:
        item = store.get(uid)
        return item.dataset if item else None


# -- DCMTK and TLS refusals -----------------------------------------------------------------


def test_dcmtk_echoscu_seed_arguments(tdwii_server: TdwiiServer) -> None:
    echoscu = require_tool("echoscu")
    node = CLIENT
    cmd = [echoscu, "+tls", f"{node}.key", f"{node}.pem", "+cf", CA, "localhost"]
    result = subprocess.run(
        [*cmd, str(tdwii_server.port)],
        cwd=tdwii_server.workdir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _s_client(server: TdwiiServer, *args: str) -> subprocess.CompletedProcess[str]:
    return openssl_client(server.port, "-CAfile", CA, *args, cwd=server.workdir, timeout=30)


REFUSALS = {
    "no client certificate": ((), ("certificate",)),
    "certificate from another CA": (("OTHER",), ("certificate", "unknown ca", "verify")),
    "TLS 1.1": (("-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"), ("version", "protocol")),
    "TLS 1.2 CBC suite": (
        ("-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA256:AES128-SHA:@SECLEVEL=0"),
        ("cipher",),
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_openssl_refusals_are_logged(
    tdwii_server: TdwiiServer, other_ca_pki: Path, case: str
) -> None:
    args, reasons = REFUSALS[case]
    if args == ("OTHER",):
        node = other_ca_pki / PKI_CLIENT
        args = ("-cert", f"{node}.pem", "-key", f"{node}.key")
    start = len(tdwii_server.log_text())
    # With TLS 1.3 the client may finish its side before the server's alert arrives, so
    # the refusal is read from the server's log (and the session is never usable).
    _s_client(tdwii_server, *args)
    text = tdwii_server.wait_log("handshake", start)
    line = next(x for x in text.splitlines() if "handshake" in x.lower())
    normalised = text.lower().replace("_", " ")
    assert "127.0.0.1" in text, line
    assert any(reason in normalised for reason in reasons), text
    assert tdwii_server.proc.poll() is None
    assert echo_works(tdwii_server), "the server stopped serving after a refusal"


def test_plain_dicom_to_tls_port_is_refused_and_logged(tdwii_server: TdwiiServer) -> None:
    start = len(tdwii_server.log_text())
    with associate(tdwii_server, tls=False) as assoc:
        assert not assoc.is_established
    tdwii_server.wait_log("handshake", start)
    assert echo_works(tdwii_server)


def _hung_up(sock: socket.socket) -> bool:
    """Whether the peer closed `sock` (end of stream or reset); False while it stays silent."""
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_idle_and_trickling_connections_do_not_delay_anyone(tdwii_server: TdwiiServer) -> None:
    idle = [socket.create_connection((tdwii_server.host, tdwii_server.port)) for _ in range(5)]
    trickler = socket.create_connection((tdwii_server.host, tdwii_server.port))
    stop = threading.Event()

    def trickle() -> None:
        hello = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(64)
        for byte in hello:
            if stop.wait(0.25):
                return
            try:
                trickler.send(bytes([byte]))
            except OSError:
                return

    thread = threading.Thread(target=trickle, daemon=True)
    thread.start()
    try:
        time.sleep(0.2)
        begin = time.monotonic()
        assert echo_works(tdwii_server)
        assert time.monotonic() - begin < 1.5  # the handshake timeout is 3 s
        # The deadline is overall: idle and trickling clients are both cut off at ~3 s.
        for sock in [*idle, trickler]:
            sock.settimeout(0.5)
            wait_until(
                lambda sock=sock: _hung_up(sock),
                8,
                "the server to cut off a silent connection after the handshake timeout",
            )
        assert "within 3" in tdwii_server.log_text() or "timed out" in tdwii_server.log_text()
    finally:
        stop.set()
        for sock in [*idle, trickler]:
            sock.close()
    assert echo_works(tdwii_server)


# -- N-CREATE -------------------------------------------------------------------------------


def test_n_create_success_then_duplicate(tdwii_server: TdwiiServer) -> None:
    ds = workitem()
    with associate(tdwii_server) as assoc:
        assert n_create(assoc, ds) == (0x0000, ds.SOPInstanceUID)
        assert n_create(assoc, ds)[0] == 0x0111
    back = stored(tdwii_server, ds.SOPInstanceUID)
    assert back is not None
    assert back.PatientID == "PAT-1"
    assert back.ProcedureStepState == "SCHEDULED"
    assert back.SOPClassUID == UPS_PUSH
    assert "created workitem " + ds.SOPInstanceUID in tdwii_server.log_text()


def test_n_create_without_uid_gets_one_assigned(tdwii_server: TdwiiServer) -> None:
    ds = workitem()
    with associate(tdwii_server) as assoc:
        status, uid = n_create(assoc, ds, uid=None)
    assert status == 0x0000
    assert uid and uid != ds.SOPInstanceUID
    assert stored(tdwii_server, uid) is not None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"ProcedureStepState": "IN PROGRESS"}, 0xC309),
        ({"ProcedureStepState": "COMPLETED"}, 0xC309),
        ({"ProcedureStepLabel": None}, 0x0120),
        ({"ScheduledProcedureStepStartDateTime": None}, 0x0120),
        ({"InputReadinessState": None}, 0x0120),
        ({"ProcedureStepState": None}, 0x0120),
        ({"ScheduledProcedureStepPriority": None}, 0x0120),
        ({"ScheduledProcedureStepPriority": ""}, 0x0121),
        ({"ProcedureStepLabel": ""}, 0x0121),
        ({"ScheduledProcedureStepPriority": "URGENT"}, 0x0106),
        ({"InputReadinessState": "MAYBE"}, 0x0106),
        ({"ScheduledProcedureStepStartDateTime": "2025-13-45"}, 0x0106),
        ({"TransactionUID": "1.2.3.4"}, 0x0106),
        ({"TransactionUID": ""}, 0x0000),
    ],
)
def test_n_create_statuses(tdwii_server: TdwiiServer, changes: dict, expected: int) -> None:
    ds = workitem(**changes)
    with associate(tdwii_server) as assoc:
        status, uid = n_create(assoc, ds)
    assert status == expected
    assert uid == ds.SOPInstanceUID
    back = stored(tdwii_server, ds.SOPInstanceUID)
    assert (back is not None) == (expected == 0)
    if back is not None:
        assert "TransactionUID" not in back


def test_n_create_adds_type2_empty(tdwii_server: TdwiiServer) -> None:
    ds = workitem(AdmissionID=None, PatientBirthDate=None, WorklistLabel=None)
    with associate(tdwii_server) as assoc:
        assert n_create(assoc, ds)[0] == 0
    back = stored(tdwii_server, ds.SOPInstanceUID)
    assert back is not None
    for keyword in ("AdmissionID", "PatientBirthDate", "WorklistLabel"):
        assert keyword in back and not back[keyword].value


# -- durability, limits, shutdown -----------------------------------------------------------


def test_kill_9_during_burst_loses_nothing_acknowledged(serve_workdir: Path) -> None:
    db = serve_workdir / "burst.sqlite"
    server = start_tdwii_server(serve_workdir, db=db, log_name="burst")
    acked: list[str] = []
    try:
        with associate(server) as assoc:
            assert assoc.is_established
            for i in range(400):
                if i == 40:
                    os.kill(server.proc.pid, signal.SIGKILL)
                ds = workitem()
                try:
                    status, uid = n_create(assoc, ds)
                except (IndexError, RuntimeError):
                    break
                if status != 0 or not assoc.is_established:
                    break
                acked.append(uid)
    finally:
        server.proc.wait(10)
    assert server.proc.returncode == -signal.SIGKILL
    assert len(acked) >= 40
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    again = start_tdwii_server(serve_workdir, db=db, log_name="burst-again")
    try:
        with associate(again) as assoc:
            for uid in acked:
                ds = workitem(SOPInstanceUID=uid)
                assert n_create(assoc, ds)[0] == 0x0111, uid
    finally:
        assert again.stop() == 0


def test_max_associations_rejects_with_local_limit(serve_workdir: Path) -> None:
    server = start_tdwii_server(
        serve_workdir,
        "--max-associations",
        "2",
        "--max-associations-per-host",
        "2",
        log_name="limit",
    )
    try:
        with associate(server) as first, associate(server) as second:
            assert first.is_established and second.is_established
            begin = time.monotonic()
            with associate(server) as third:
                assert third.is_rejected
                rj = third.acceptor.primitive
                assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)
            assert time.monotonic() - begin < 3
        assert echo_works(server)
    finally:
        assert server.stop() == 0


def test_sigterm_waits_for_running_association_then_exits_0(serve_workdir: Path) -> None:
    server = start_tdwii_server(serve_workdir, log_name="sigterm")
    with associate(server) as assoc:
        assert assoc.is_established
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.proc.poll() is None  # still serving the open association
        assert assoc.send_c_echo().Status == 0
    assert server.proc.wait(15) == 0
    text = server.log_text()
    assert "SIGTERM" in text
    with socket.socket() as probe:
        assert probe.connect_ex((server.host, server.port)) != 0


def test_second_signal_exits_at_once(serve_workdir: Path) -> None:
    server = start_tdwii_server(serve_workdir, log_name="twice")
    with associate(server) as assoc:
        assert assoc.is_established
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(5) != 0
        assert "second signal" in server.log_text()


# -- command line errors: one line each -------------------------------------------------------


def _serve(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "serve", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=30,
    )


def _one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = [x for x in result.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def test_port_in_use_is_one_line(tdwii_server: TdwiiServer, serve_workdir: Path) -> None:
    port = str(tdwii_server.port)
    result = _serve(serve_workdir, "--mtls", "--port", port, "-ba", "127.0.0.1", "--db", "x.db")
    assert result.returncode == 1
    assert "in use" in _one_line(result)


def test_bad_db_path_is_one_line(serve_workdir: Path, tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")  # (a missing folder is made, 0700)
    result = _serve(serve_workdir, "--port", "0", "--db", str(tmp_path / "a-file" / "x.sqlite"))
    assert result.returncode == 1
    assert "cannot create database" in _one_line(result)


def test_bad_config_file_is_one_line(serve_workdir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.ini"
    bad.write_text("[DEFAULT]\n    port: eleven\n")
    result = _serve(serve_workdir, "-c", str(bad))
    assert result.returncode == 1
    line = _one_line(result)
    assert "port" in line and "eleven" in line


def test_seed_ini_configures_the_server(serve_workdir: Path, tmp_path: Path) -> None:
    port = free_port()
    ini = tmp_path / "upsscp.ini"
    ini.write_text(
        "# seed format\n[DEFAULT]\n"
        "    ae_title: SEEDSCP\n"
        f"    port: {port}\n"
        "    max_pdu: 16382\n"
        "    acse_timeout: 30\n    dimse_timeout: 30\n    network_timeout: 30\n"
        "    bind_address: 127.0.0.1\n"
        "    instance_location: ./data_storage/ups_instances\n"
        f"    database_location: {tmp_path / 'seed.sqlite'}\n"
        "    log_identifier: True\n"
        "    mutual_tls: True\n"
        f"    ca_certificate: {serve_workdir / CA}\n"
        f"    certificate: {serve_workdir / 'certs' / PKI_SERVER}.pem\n"
        f"    private_key: {serve_workdir / 'certs' / PKI_SERVER}.key\n"
        "\n[STORESCP]\n    address: 127.0.0.1\n    port: 11113\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "tdwii_cli", "serve", "-c", str(ini), "-v"],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    server = TdwiiServer(proc, "127.0.0.1", port, tmp_path / "seed.sqlite", tmp_path, serve_workdir)
    try:
        lines = []
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "listening on" in line:
                break
        text = "".join(lines)
        assert f"SEEDSCP listening on 127.0.0.1:{port} (mutual TLS)" in text, text
        assert "SEEDSCP" in text and "(config file)" in text
        # TLS shows once, as used (no stale "mutual_tls False (default)" row)
        assert "mutual TLS, profile bcp195-rfc8996" in text, text
        assert "mutual_tls" not in text, text
        assert echo_works(server)
        assert (tmp_path / "seed.sqlite").exists()
    finally:
        assert server.stop() == 0


def test_ae_config_errors_are_one_line(serve_workdir: Path, tmp_path: Path) -> None:
    bad = tmp_path / "ApplicationEntities.json"
    bad.write_text('[{"AETitle": "TDD", "IPAddr": "127.0.0.1", "Port": "x"}]')
    result = _serve(serve_workdir, "--ae-config", str(bad), "--port", "0", "--db", "y.db")
    assert result.returncode == 1
    assert "TDD" in _one_line(result) and "Port" in _one_line(result)
