"""`tdwii ups` against software nobody here wrote: a UPS SCP made in the test from pynetdicom's
own UPS service (its handlers keep an in-memory worklist), so the commands are not tuned to
tdwii serve's answers; and `tdwii ups watch` receiving reports sent by a pynetdicom client."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from conftest import free_port, one_error_line, wait_until
from tdwii_cli.ups.workitem import build_workitem

UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
UPS_WATCH = "1.2.840.10008.5.1.4.34.6.2"
UPS_PULL = "1.2.840.10008.5.1.4.34.6.3"
UPS_EVENT = "1.2.840.10008.5.1.4.34.6.4"
UPS_QUERY = "1.2.840.10008.5.1.4.34.6.5"


@dataclass
class ForeignScp:
    """pynetdicom's UPS SCP with a dict as its worklist; what it was asked is recorded."""

    port: int
    workitems: dict[str, Dataset] = field(default_factory=dict)
    transactions: dict[str, str] = field(default_factory=dict)
    requests: list[tuple[str, str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        query = event.identifier
        wanted = ""
        if query.get("ScheduledStationNameCodeSequence"):
            wanted = query.ScheduledStationNameCodeSequence[0].get("CodeValue", "")
        self.requests.append(("C-FIND", event.request.AffectedSOPClassUID, query))
        for uid, ds in list(self.workitems.items()):
            if wanted and ds.ScheduledStationNameCodeSequence[0].CodeValue != wanted:
                continue
            if event.is_cancelled:
                yield 0xFE00, None
                return
            match = Dataset()
            for elem in query:
                if elem.keyword in ds:
                    match[elem.keyword] = ds[elem.keyword]
                else:
                    match.add(elem)
            match.SOPInstanceUID = uid
            yield 0xFF00, match

    def on_action(self, event: Any) -> tuple[int, Dataset | None]:
        uid = event.request.RequestedSOPInstanceUID
        info = event.action_information
        self.requests.append(("N-ACTION", event.request.RequestedSOPClassUID, info))
        with self.lock:
            ds = self.workitems.get(uid)
            if ds is None:
                return 0xC307, None
            if event.action_type != 1:
                return 0x0123, None
            wanted, txn = info.ProcedureStepState, info.TransactionUID
            if wanted == "IN PROGRESS":
                if ds.ProcedureStepState != "SCHEDULED":
                    return 0xC302, None
                self.transactions[uid] = txn
            elif self.transactions.get(uid) != txn:
                return 0xC301, None
            ds.ProcedureStepState = wanted
            return 0x0000, None

    def on_set(self, event: Any) -> tuple[int, Dataset | None]:
        uid = event.request.RequestedSOPInstanceUID
        mods = event.modification_list
        self.requests.append(("N-SET", event.request.RequestedSOPClassUID, mods))
        with self.lock:
            ds = self.workitems.get(uid)
            if ds is None:
                return 0xC307, None
            if mods.get("TransactionUID") != self.transactions.get(uid):
                return 0xC301, None
            for elem in mods:
                if elem.keyword != "TransactionUID":
                    ds[elem.tag] = elem
            return 0x0000, mods

    def on_get(self, event: Any) -> tuple[int, Dataset | None]:
        uid = event.request.RequestedSOPInstanceUID
        self.requests.append(("N-GET", event.request.RequestedSOPClassUID, None))
        ds = self.workitems.get(uid)
        if ds is None:
            return 0xC307, None
        wanted = event.request.AttributeIdentifierList
        if not wanted:
            return 0x0000, ds
        out = Dataset()
        for tag in wanted if isinstance(wanted, list) else [wanted]:
            if tag in ds:
                out.add(ds[tag])
        return 0x0000, out


@pytest.fixture
def foreign_scp() -> Iterator[ForeignScp]:
    from pynetdicom import AE, evt

    scp = ForeignScp(free_port())
    ae = AE(ae_title="FOREIGN")
    for sop in (UPS_PUSH, UPS_PULL, UPS_WATCH, UPS_QUERY):
        ae.add_supported_context(sop)
    handlers = [
        (evt.EVT_C_FIND, scp.on_find),
        (evt.EVT_N_ACTION, scp.on_action),
        (evt.EVT_N_SET, scp.on_set),
        (evt.EVT_N_GET, scp.on_get),
    ]
    server = ae.start_server(("127.0.0.1", scp.port), block=False, evt_handlers=handlers)
    try:
        yield scp
    finally:
        server.shutdown()


def tdwii(*args: str, cwd: Path, env: dict[str, str] | None = None) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "tdwii_cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_the_commands_against_pynetdicoms_ups_scp(foreign_scp: ForeignScp, tmp_path: Path) -> None:
    uid = "1.2.826.0.1.3680043.10.511.77"
    foreign_scp.workitems[uid] = build_workitem(
        patient_id="FOREIGN1", patient_name="Far^Away", label="Fx 3", station="FOREIGNTB"
    )
    foreign_scp.workitems[uid].SOPInstanceUID = uid
    env = {"TDWII_TRANSACTIONS": str(tmp_path / "txn.json")}
    where = ["127.0.0.1", str(foreign_scp.port), "-aec", "FOREIGN"]

    found = tdwii("ups", "find", *where, "--station", "FOREIGNTB", cwd=tmp_path, env=env)
    assert found.returncode == 0, found.stderr
    assert uid in found.stdout and "SCHEDULED" in found.stdout and "Far Away" in found.stdout
    kind, sop_class, identifier = foreign_scp.requests[0]
    assert (kind, sop_class) == ("C-FIND", UPS_PULL)
    assert identifier.ScheduledStationNameCodeSequence[0].CodeValue == "FOREIGNTB"

    claimed = tdwii("ups", "claim", *where, uid, cwd=tmp_path, env=env)
    assert claimed.returncode == 0, claimed.stderr
    assert foreign_scp.workitems[uid].ProcedureStepState == "IN PROGRESS"
    txn = foreign_scp.transactions[uid]
    assert txn in claimed.stdout
    assert foreign_scp.requests[-1][1] == UPS_PUSH  # every UPS instance is a Push instance

    progressed = tdwii(
        "ups", "progress", *where, uid, "--percent", "40", "--beam", "1", cwd=tmp_path, env=env
    )
    assert progressed.returncode == 0, progressed.stderr
    info = foreign_scp.workitems[uid].ProcedureStepProgressInformationSequence[0]
    assert float(info.ProcedureStepProgress) == 40
    assert info.ProcedureStepProgressParametersSequence[0].NumericValue == 1

    shown = tdwii("ups", "get", *where, uid, cwd=tmp_path, env=env)
    assert shown.returncode == 0, shown.stderr
    assert "IN PROGRESS" in shown.stdout and "FOREIGN1" in shown.stdout

    done = tdwii("ups", "complete", *where, uid, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    ds = foreign_scp.workitems[uid]
    assert ds.ProcedureStepState == "COMPLETED"
    performed = ds.UnifiedProcedureStepPerformedProcedureSequence[0]
    assert performed.PerformedStationNameCodeSequence[0].CodeValue == "FOREIGNTB"
    assert performed.PerformedWorkitemCodeSequence[0].CodeValue == "121726"
    assert (
        performed.PerformedProcedureStepStartDateTime
        and performed.PerformedProcedureStepEndDateTime
    )
    assert [r[0] for r in foreign_scp.requests[-3:]] == ["N-GET", "N-SET", "N-ACTION"]

    again = tdwii(
        "ups", "claim", *where, uid, "--transactions", str(tmp_path / "b.json"), cwd=tmp_path
    )
    assert again.returncode == 64 and "0xC302" in one_error_line(again)
    missing = tdwii("ups", "get", *where, "1.2.3.4.404", cwd=tmp_path)
    assert missing.returncode == 64 and "0xC307" in one_error_line(missing)


def test_watch_receives_what_a_pynetdicom_client_reports(tmp_path: Path) -> None:
    from pynetdicom import AE

    port = free_port()
    out, err = tmp_path / "watch.out", tmp_path / "watch.err"
    with out.open("wb") as o, err.open("wb") as e:
        command = [sys.executable, "-m", "tdwii_cli", "ups", "watch", "-p", str(port)]
        command += ["-ba", "127.0.0.1", "-aet", "WATCHME", "--json"]
        watch = subprocess.Popen(
            command,
            cwd=tmp_path,
            stdout=o,
            stderr=e,
        )
    try:
        wait_until(lambda: "listening on" in err.read_text(), 30, err.read_text)
        # connections that never say a word take no report's turn
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        ae = AE(ae_title="PYSENDER")
        ae.add_requested_context(UPS_EVENT)
        ae.add_requested_context("1.2.840.10008.1.1")
        assoc = ae.associate("127.0.0.1", port, ae_title="WATCHME")
        assert assoc.is_established
        try:
            uid = "1.2.826.0.1.3680043.10.511.78"
            state = Dataset()
            state.ProcedureStepState = "IN PROGRESS"
            state.InputReadinessState = "READY"
            status, _ = assoc.send_n_event_report(state, 1, UPS_PUSH, uid, meta_uid=UPS_EVENT)
            assert status.Status == 0x0000
            item = Dataset()
            item.ProcedureStepProgress = "75"
            item.ProcedureStepProgressDescription = "beam 3"
            progress = Dataset()
            progress.ProcedureStepState = "IN PROGRESS"
            progress.ProcedureStepProgressInformationSequence = Sequence([item])
            status, _ = assoc.send_n_event_report(progress, 3, UPS_PUSH, uid, meta_uid=UPS_EVENT)
            assert status.Status == 0x0000
            echo = assoc.send_c_echo()
            assert echo.Status == 0x0000
        finally:
            assoc.release()

        def two() -> list[dict[str, Any]]:
            lines = [json.loads(x) for x in out.read_text().splitlines() if x.strip()]
            return lines if len(lines) >= 2 else []

        first, second = wait_until(two, 15, lambda: out.read_text() + err.read_text())
        assert (first["event"], first["uid"], first["state"]) == (
            "State Report",
            uid,
            "IN PROGRESS",
        )
        assert first["sender_ae"] == "PYSENDER" and first["input_readiness"] == "READY"
        assert (second["event"], second["progress"], second["description"]) == (
            "Progress Report",
            "75",
            "beam 3",
        )
        for sock in idle:
            sock.close()
    finally:
        watch.terminate()
        watch.wait(20)
    assert watch.returncode == 0, err.read_text()
    assert "Traceback" not in err.read_text()


def test_watch_over_mtls_drops_stalled_and_garbage_peers_and_keeps_answering(
    pki_dir: Path, tmp_path: Path
) -> None:
    """The receiver is `serve`'s front end: a handshake that stalls is closed after -to, a
    peer that is not TLS is dropped, and a real client is answered meanwhile."""
    import shutil
    import time

    shutil.copytree(pki_dir, tmp_path / "certs")
    port = free_port()
    err = tmp_path / "watch.err"
    with err.open("wb") as e:
        command = [sys.executable, "-m", "tdwii_cli", "ups", "watch", "--mtls", "-p", str(port)]
        command += [
            "-ba",
            "127.0.0.1",
            "-aet",
            "WATCHME",
            "-to",
            "1",
            "-d",
        ]  # -d: each warning told at once
        watch = subprocess.Popen(
            command,
            cwd=tmp_path,
            stdout=subprocess.DEVNULL,
            stderr=e,
        )
    try:
        wait_until(lambda: "listening on" in err.read_text(), 30, err.read_text)
        stalled = [socket.create_connection(("127.0.0.1", port)) for _ in range(3)]
        garbage = socket.create_connection(("127.0.0.1", port))
        garbage.sendall(b"GET / HTTP/1.0\r\n\r\n")
        started = time.monotonic()
        echo = tdwii("echo", "--mtls", "127.0.0.1", str(port), "-aec", "WATCHME", cwd=tmp_path)
        assert echo.returncode == 0, echo.stderr
        assert "status 0x0000" in echo.stdout
        assert time.monotonic() - started < 5
        wait_until(
            lambda: err.read_text().count("TLS handshake not completed within 1 s") >= 3,
            10,
            err.read_text,
        )
        for sock in [*stalled, garbage]:
            sock.close()
    finally:
        watch.terminate()
        watch.wait(20)
    assert watch.returncode == 0
    assert "Traceback" not in err.read_text()
