"""`tdwii create-workitem` end to end against `tdwii serve --mtls` in a subprocess.

Associations are counted by a TCP relay between client and server (it only
copies bytes; TLS runs end to end through it), so "one association for many
files" is checked independently of both programs' logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from conftest import TdwiiServer, free_port, one_error_line, start_tdwii_server
from tdwii_cli.client.dicomfiles import write_part10
from tdwii_cli.ups.workitem import build_workitem

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "ups_truebeam1_breast_left.dcm"
TDWII = [sys.executable, "-m", "tdwii_cli"]
CLIENT_TLS = [
    "-mtls",
    "-ca",
    "certs/rootCA/rootCA.pem",
    "-cert",
    "certs/clients/workitemcreator/workitemcreator.pem",
    "-key",
    "certs/clients/workitemcreator/workitemcreator.key",
]


@pytest.fixture(scope="module")
def workdir(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder laid out like the seed's: certs/ (from `tdwii pki init`) and ups_instances/."""
    work = tmp_path_factory.mktemp("cw")
    (work / "certs").symlink_to(pki_dir, target_is_directory=True)
    shutil.copytree(ROOT / "ups_instances", work / "ups_instances")
    return work


@pytest.fixture(scope="module")
def server(workdir: Path) -> Iterator[TdwiiServer]:
    """`tdwii serve --mtls` in `workdir` (the pki layout's defaults, no certificate flags)."""
    srv = start_tdwii_server(workdir)
    try:
        yield srv
    finally:
        srv.stop()


class Relay:
    """A loopback TCP relay that counts the connections it forwards."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop = True
        self.listener.close()


@pytest.fixture
def relay(server: TdwiiServer) -> Iterator[Relay]:
    r = Relay(server.port)
    try:
        yield r
    finally:
        r.close()


def run(workdir: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [*TDWII, "create-workitem", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def _workitems(folder: Path, n: int, prefix: str = "w") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        ds = build_workitem(
            patient_id=f"{prefix}-{i}",
            patient_name=f"Test^{prefix}{i}",
            label=f"Fx {i}",
            station="TrueBeam1" if i % 2 else "Halcyon2",
            plan_uid=pydicom.uid.generate_uid(),
        )
        sub = folder / ("even" if i % 2 == 0 else "odd")
        sub.mkdir(exist_ok=True)
        paths.append(write_part10(ds, sub / f"{prefix}{i:03}.dcm"))
    return paths


def _stored(server: TdwiiServer, uid: str) -> pydicom.Dataset:
    from tdwii_cli.server.store import WorkitemStore

    store = WorkitemStore(server.db)
    try:
        record = store.get(uid)
        assert record is not None, f"{uid} not in the server's store"
        return record.dataset
    finally:
        close = getattr(store, "close", None)
        if close:
            close()


def test_seed_command_line_then_duplicate(server: TdwiiServer, workdir: Path) -> None:
    args = [*CLIENT_TLS, "localhost", str(server.port), f"./ups_instances/{SAMPLE}", "--debug"]
    first = run(workdir, *args)
    assert first.returncode == 0, first.stderr
    uid = pydicom.dcmread(workdir / "ups_instances" / SAMPLE).SOPInstanceUID
    assert uid in first.stdout
    assert "0x0000" in first.stdout
    assert "Traceback" not in first.stderr

    again = run(workdir, *args)
    assert again.returncode == 64, again.stdout + again.stderr
    assert "0x0111" in again.stdout
    assert "Duplicat" in again.stdout  # "Duplicate SOP Instance" in words


def test_folder_of_20_over_one_association(
    server: TdwiiServer, relay: Relay, tmp_path: Path
) -> None:
    paths = _workitems(tmp_path / "batch", 20)
    result = run(
        tmp_path,
        "--mtls",
        "--ca",
        str(server_ca(server)),
        *client_files(server),
        "127.0.0.1",
        str(relay.port),
        str(tmp_path / "batch"),
        "--json",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["created"] == 20
    assert doc["associations"] == 1
    assert relay.connections == 1
    sent = {pydicom.dcmread(p).SOPInstanceUID for p in paths}
    assert {r["sop_instance_uid"] for r in doc["results"]} == sent
    assert all(r["status"] == "0x0000" for r in doc["results"])


def test_batch_size_reconnects(server: TdwiiServer, relay: Relay, tmp_path: Path) -> None:
    _workitems(tmp_path / "batch", 5, prefix="b")
    result = run(
        tmp_path,
        "--mtls",
        "--ca",
        str(server_ca(server)),
        *client_files(server),
        "127.0.0.1",
        str(relay.port),
        str(tmp_path / "batch"),
        "--batch-size",
        "2",
        "--json",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout)["associations"] == 3
    assert relay.connections == 3


def server_ca(server: TdwiiServer) -> Path:
    return server.db.parent / "certs" / "rootCA" / "rootCA.pem"


def client_files(server: TdwiiServer) -> list[str]:
    node = server.db.parent / "certs" / "clients" / "workitemcreator" / "workitemcreator"
    return ["--cert", f"{node}.pem", "--key", f"{node}.key"]


def test_non_dicom_files_in_a_folder_are_passed_over_but_named_ones_fail(
    server: TdwiiServer, workdir: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "mixed"
    _workitems(folder, 1, prefix="nd")
    (folder / "notes.txt").write_text("not a workitem\n")
    (folder / "empty.dcm").write_bytes(b"")
    args = [*CLIENT_TLS, "localhost", str(server.port)]
    result = run(workdir, *args, str(folder), "-v")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "notes.txt: passed over, not a DICOM file" in result.stderr
    assert "empty.dcm: passed over, empty file" in result.stderr
    assert "ERROR" not in result.stderr and "notes.txt" not in result.stdout
    assert "0x0000" in result.stdout and "1 created" in result.stdout
    quiet = run(workdir, *args, str(folder))  # at the default level: not a word
    assert "notes.txt" not in quiet.stderr and quiet.returncode == 64  # (a duplicate now)

    # a DICOM file that is broken is no plain non-DICOM file: reported, exit 3
    (folder / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff")
    broken = run(workdir, *CLIENT_TLS, "--new-uid", "localhost", str(server.port), str(folder))
    assert broken.returncode == 3 and "broken.dcm: skipped, " in broken.stderr

    only = run(workdir, *args, str(folder / "notes.txt"))  # named on its own: it fails
    assert only.returncode == 1
    assert "notes.txt: skipped, not a DICOM file" in only.stderr
    nothing = run(workdir, *args, str(tmp_path / "mixed" / "even"), "--dry-run")
    assert nothing.returncode == 0  # the folder of the one workitem
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "README.md").write_text("# workitems go here\n")
    none = run(workdir, *args, str(bare))
    assert none.returncode == 1 and "no DICOM files under" in one_error_line(none)


def test_dry_run_and_save_need_no_host_or_port(workdir: Path, tmp_path: Path) -> None:
    examples = ROOT / "ups_instances"
    files = sorted(str(p) for p in examples.glob("*.dcm"))
    assert len(files) >= 2 and (examples / "README.md").exists()
    for args in ([str(examples)], files[:2], files[:3], ["localhost", "2762", *files[:2]]):
        checked = run(workdir, "--dry-run", *args)
        assert checked.returncode == 0, (args, checked.stderr)
        expected = len(files) if args == [str(examples)] else 2 + (args == files[:3])
        assert f"{expected} dry run" in checked.stdout, checked.stdout
    saved = tmp_path / "built.dcm"
    built = run(workdir, "--patient-id", "P1", "--station", "TrueBeam1", "--save", str(saved))
    assert built.returncode == 0 and pydicom.dcmread(saved).PatientID == "P1"
    missing = run(workdir, "localhost", files[0])
    assert missing.returncode == 2 and "is not a TCP port" in one_error_line(missing)


def test_the_readme_example_sends_the_whole_folder(tmp_path: Path, pki_dir: Path) -> None:
    """`tdwii create-workitem --mtls localhost PORT ups_instances/`, as the README has it."""
    (tmp_path / "certs").symlink_to(pki_dir)
    fresh = start_tdwii_server(tmp_path)
    try:
        examples = ROOT / "ups_instances"
        sent = run(tmp_path, "--mtls", "localhost", str(fresh.port), f"{examples}/")
        assert sent.returncode == 0, sent.stdout + sent.stderr
        assert f"{len(list(examples.glob('*.dcm')))} created" in sent.stdout
    finally:
        fresh.stop()


def test_completed_state(server: TdwiiServer, relay: Relay, workdir: Path, tmp_path: Path) -> None:
    (path,) = _workitems(tmp_path / "c", 1, prefix="done")
    ds = pydicom.dcmread(path)
    ds.ProcedureStepState = "COMPLETED"
    ds.save_as(path)
    local = run(workdir, *CLIENT_TLS, "localhost", str(relay.port), str(path))
    assert local.returncode == 1, local.stdout + local.stderr
    assert "not sent, C309 Procedure Step State is COMPLETED, not SCHEDULED" in local.stderr
    assert relay.connections == 0  # nothing worth sending: no association at all

    remote = run(workdir, *CLIENT_TLS, "localhost", str(server.port), str(path), "--no-check")
    assert remote.returncode == 64, remote.stdout + remote.stderr
    assert "0xC309" in remote.stdout


def test_missing_type1_attribute(server: TdwiiServer, workdir: Path, tmp_path: Path) -> None:
    (path,) = _workitems(tmp_path / "m", 1, prefix="miss")
    ds = pydicom.dcmread(path)
    del ds.ProcedureStepLabel
    ds.save_as(path)
    local = run(workdir, *CLIENT_TLS, "localhost", str(server.port), str(path))
    assert local.returncode == 1
    assert "not sent, 0120 missing Type 1 attribute ProcedureStepLabel" in local.stderr

    remote = run(workdir, *CLIENT_TLS, "localhost", str(server.port), str(path), "--no-check")
    assert remote.returncode == 64, remote.stdout + remote.stderr
    assert "0x0120" in remote.stdout


def test_option_mode_reads_back_equal(server: TdwiiServer, workdir: Path, tmp_path: Path) -> None:
    options = [
        "--patient-id", "OPT-1", "--patient-name", "Option^Mode", "--label", "Pelvis Fx 4",
        "--worklist-label", "TrueBeam1 afternoon", "--scheduled", "2025-03-11T14:30",
        "--priority", "HIGH", "--station", "TrueBeam1",
        "--plan-uid", "1.2.826.0.1.3680043.8.498.99.1",
    ]  # fmt: skip
    # Option mode sends directly ...
    sent = run(workdir, *CLIENT_TLS, "localhost", str(server.port), *options, "--json")
    assert sent.returncode == 0, sent.stdout + sent.stderr
    uid = json.loads(sent.stdout)["results"][0]["sop_instance_uid"]
    stored = _stored(server, uid)
    assert stored.PatientID == "OPT-1"
    assert str(stored.PatientName) == "Option^Mode"
    assert stored.ProcedureStepLabel == "Pelvis Fx 4"
    assert stored.ScheduledProcedureStepPriority == "HIGH"
    assert stored.ScheduledProcedureStepStartDateTime == "20250311143000"
    assert stored.ScheduledStationNameCodeSequence[0].CodeValue == "TrueBeam1"
    plan = stored.InputInformationSequence[0].ReferencedSOPSequence[0]
    assert plan.ReferencedSOPInstanceUID == "1.2.826.0.1.3680043.8.498.99.1"
    assert stored.ProcedureStepState == "SCHEDULED"

    # ... and what --save writes is what the server keeps, attribute for attribute.
    saved = tmp_path / "built.dcm"
    made = run(workdir, *options, "--save", str(saved))
    assert made.returncode == 0, made.stderr
    built = pydicom.dcmread(saved)
    assert run(workdir, *CLIENT_TLS, "localhost", str(server.port), str(saved)).returncode == 0
    back = _stored(server, built.SOPInstanceUID)
    expected = built.to_json_dict()
    got = back.to_json_dict()
    # Attributes the SCP maintains itself may be filled in when we sent them empty.
    for tag in ("00404010", "00741202", "00081195"):
        if not expected.get(tag, {}).get("Value"):
            expected.pop(tag, None)
            got.pop(tag, None)
    assert {t: got.get(t) for t in expected} == expected


def test_unreachable_and_tls_failures(
    workdir: Path, server: TdwiiServer, other_ca_pki: Path
) -> None:
    sample = f"./ups_instances/{SAMPLE}"
    closed = run(workdir, *CLIENT_TLS, "localhost", str(free_port()), sample, "--new-uid")
    assert closed.returncode == 60, closed.stderr
    assert "cannot reach" in closed.stderr

    plain = run(workdir, "localhost", str(server.port), sample, "--new-uid")
    assert plain.returncode == 62, plain.stderr

    node = other_ca_pki / "clients" / "workitemcreator" / "workitemcreator"
    untrusted = run(workdir, "-mtls", "-ca", str(other_ca_pki / "rootCA" / "rootCA.pem"),
                    "-cert", f"{node}.pem", "-key", f"{node}.key", "localhost", str(server.port),
                    sample, "--new-uid")  # fmt: skip
    assert untrusted.returncode == 63, untrusted.stderr
    assert "TLS handshake" in untrusted.stderr
    for result in (closed, plain, untrusted):
        assert "Traceback" not in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("tdwii: error:")


def test_complete_workitem_is_stored_byte_for_byte(server: TdwiiServer, tmp_path: Path) -> None:
    """A complete Explicit VR LE workitem goes from the file to the store unchanged: the client
    sends the file's data set bytes, and the server keeps what it received (nothing to add)."""
    import sqlite3

    from tdwii_cli.client.dicomfiles import dataset_bytes

    (path,) = _workitems(tmp_path / "one", 1, prefix="raw")
    result = run(tmp_path, "--mtls", "--ca", str(server_ca(server)), *client_files(server),
                 "127.0.0.1", str(server.port), str(path))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    uid = pydicom.dcmread(path).SOPInstanceUID
    with contextlib.closing(sqlite3.connect(server.db)) as db:
        (blob,) = db.execute("SELECT dataset FROM workitems WHERE uid = ?", (uid,)).fetchone()
    assert bytes(blob) == dataset_bytes(path.read_bytes())

    # Without a Type 2 attribute the server adds it, empty, so it stores an encoding of its own.
    ds = pydicom.dcmread(path)
    del ds.WorklistLabel
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    partial = write_part10(ds, tmp_path / "partial.dcm")
    result = run(tmp_path, "--mtls", "--ca", str(server_ca(server)), *client_files(server),
                 "127.0.0.1", str(server.port), str(partial))  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    back = _stored(server, ds.SOPInstanceUID)
    assert "WorklistLabel" in back and not back.WorklistLabel
    assert back.PatientID == ds.PatientID
