"""`tdwii ups` end to end: every command as a subprocess against a real `tdwii serve --mtls`,
with `tdwii ups watch --mtls` subscribed and printing the event reports (JSON lines).

The tests share one server and one watcher (module scope) and use distinct stations
and patients, so their workitems never meet.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset

from conftest import TdwiiServer, free_port, one_error_line, start_tdwii_server, wait_until


@dataclass
class Env:
    workdir: Path
    server: TdwiiServer
    watch: subprocess.Popen[bytes]
    watch_out: Path
    watch_err: Path
    transactions: Path

    def reports(self, uid: str) -> list[dict[str, Any]]:
        lines = self.watch_out.read_text().splitlines()
        return [r for r in (json.loads(line) for line in lines if line.strip()) if r["uid"] == uid]

    def wait_reports(self, uid: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]]:
            found = self.reports(uid)
            return found if len(found) >= count else []

        return wait_until(
            enough, timeout, lambda: f"{count} reports for {uid}: {self.reports(uid)}", 0.05
        )

    def state(self, uid: str) -> str | None:
        with sqlite3.connect(self.server.db) as db:
            row = db.execute("SELECT state FROM workitems WHERE uid = ?", (uid,)).fetchone()
        return row[0] if row else None


def run(env: Env, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """`python -m tdwii_cli ARGS` in the PKI folder, the transaction file in the env."""
    environ = {**os.environ, "TDWII_TRANSACTIONS": str(env.transactions)}
    return subprocess.run(
        [sys.executable, "-m", "tdwii_cli", *args],
        cwd=env.workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environ,
    )


def ups(env: Env, command: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`tdwii ups COMMAND --mtls HOST PORT ARGS`."""
    return run(env, "ups", command, "--mtls", env.server.host, str(env.server.port), *args)


def ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def create(env: Env, patient: str, station: str) -> str:
    """One workitem built by `tdwii create-workitem`; its SOP Instance UID."""
    out = ok(
        run(
            env,
            "create-workitem",
            "--mtls",
            env.server.host,
            str(env.server.port),
            "--patient-id",
            patient,
            "--patient-name",
            f"Test^{patient}",
            "--station",
            station,
            "--json",
        )
    )
    return str(json.loads(out)["results"][0]["sop_instance_uid"])


def rows(stdout: str) -> list[list[str]]:
    """The rows of `ups find`'s piped table (split on runs of 2+ spaces), header dropped."""
    import re

    lines = [line for line in stdout.splitlines() if line.strip()]
    assert lines and lines[0].startswith("SOP Instance UID"), stdout
    return [re.split(r"\s{2,}", line.strip()) for line in lines[1:]]


@pytest.fixture(scope="module")
def env(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("upscli")
    shutil.copytree(pki_dir, workdir / "certs")
    watch_port = free_port()
    ae_config = workdir / "ae.json"
    ae_config.write_text(
        json.dumps(
            [{"AETitle": "WATCHER", "IPAddr": "127.0.0.1", "Port": watch_port, "mTLS": True}]
        )
    )
    server = start_tdwii_server(workdir, "--ae-config", str(ae_config), log_name="upscli")
    out, err = workdir / "watch.out", workdir / "watch.err"
    with out.open("wb") as o, err.open("wb") as e:
        command = [sys.executable, "-m", "tdwii_cli", "ups", "watch", "--mtls"]
        command += ["-p", str(watch_port), "-ba", "127.0.0.1", "-aet", "WATCHER", "--json", "-v"]
        command += ["--subscribe", server.host, str(server.port)]
        watch = subprocess.Popen(
            command,
            cwd=workdir,
            stdout=o,
            stderr=e,
        )
    current = Env(workdir, server, watch, out, err, workdir / "state" / "transactions.json")
    try:
        wait_until(
            lambda: "subscribed WATCHER" in err.read_text() or watch.poll() is not None,
            30,
            lambda: f"watch to subscribe: {err.read_text()}",
        )
        assert watch.poll() is None, err.read_text()
        yield current
    finally:
        if watch.poll() is None:
            watch.terminate()
            watch.wait(20)
        server.stop()


# -- the whole loop ------------------------------------------------------------------------


def test_the_whole_loop_find_claim_progress_get_complete(env: Env) -> None:
    uid = create(env, "LOOP1", "TBLOOP")
    scheduled = env.wait_reports(uid, 1)
    assert scheduled[0]["event"] == "State Report" and scheduled[0]["state"] == "SCHEDULED"

    found = rows(ok(ups(env, "find", "--station", "TBLOOP", "--date", "today")))
    assert [r[0] for r in found] == [uid]
    assert found[0][1] == "SCHEDULED" and "Test LOOP1 (LOOP1)" in found[0]

    claimed = ok(ups(env, "claim", uid))
    assert "IN PROGRESS" in claimed and "Transaction UID 2.25." in claimed
    assert env.transactions.stat().st_mode & 0o777 == 0o600
    assert env.transactions.parent.stat().st_mode & 0o777 == 0o700
    txn = json.loads(env.transactions.read_text())["workitems"][uid]["transaction_uid"]
    assert txn in claimed

    ok(ups(env, "progress", uid, "--percent", "50", "--description", "beam 1", "--beam", "1"))
    ok(ups(env, "progress", uid, "--percent", "100", "--description", "beam 2", "--beam", "2"))
    shown = ok(ups(env, "get", uid))
    assert "Procedure Step State  CS  IN PROGRESS" in shown
    assert "Procedure Step Progress  DS  100" in shown
    assert "Procedure Step Progress Description  ST  beam 2" in shown
    assert txn not in shown  # N-GET never returns the Transaction UID

    done = ok(ups(env, "complete", uid, "--output", "1.2.3.4.5"))
    assert f"completed {uid}" in done
    assert env.state(uid) == "COMPLETED"
    assert uid not in json.loads(env.transactions.read_text())["workitems"]

    reports = env.wait_reports(uid, 6)
    kinds = [(r["event"], r["state"], r["progress"]) for r in reports]
    assert kinds[0] == ("State Report", "SCHEDULED", None)
    assert ("State Report", "IN PROGRESS", None) in kinds
    progress = [k for k in kinds if k[0] == "Progress Report"]
    assert [p[2] for p in progress] == ["50", "100"]
    assert kinds[-1] == ("State Report", "COMPLETED", None)
    order = [k for k in kinds if k[0] != "Assigned"]
    assert order.index(("State Report", "IN PROGRESS", None)) < order.index(progress[0])

    final = ok(ups(env, "get", uid, "-k", "UnifiedProcedureStepPerformedProcedureSequence"))
    assert "Performed Station Name Code Sequence" in final and "TBLOOP" in final
    assert "Output Information Sequence  SQ  1 item(s)" in final and "1.2.3.4.5" in final


def test_deliver_completes_and_cancels_at_a_beam(env: Env) -> None:
    uid = create(env, "DELIV1", "TBDELIV")
    out = ok(ups(env, "deliver", "--station", "TBDELIV", "--beams", "3"))
    assert "RO-58" in out and "RO-60 claimed" in out and out.count("RO-62 progress") == 3
    assert f"{uid}: COMPLETED" in out
    assert env.state(uid) == "COMPLETED"
    reports = env.wait_reports(uid, 6)
    assert [r["progress"] for r in reports if r["event"] == "Progress Report"] == [
        "33.3",
        "66.7",
        "100",
    ]
    assert reports[-1]["state"] == "COMPLETED"

    other = create(env, "DELIV2", "TBDELIV")
    out = ok(ups(env, "deliver", "--station", "TBDELIV", "--beams", "3", "--cancel-at", "2"))
    assert f"{other}: CANCELED" in out and out.count("RO-62 progress") == 1
    assert env.state(other) == "CANCELED"
    last = env.wait_reports(other, 4)[-1]
    assert last["state"] == "CANCELED" and "beam 2 of 3" in (last["detail"] or "")

    nothing = ups(env, "deliver", "--station", "TBDELIV")
    assert nothing.returncode == 1
    assert "no READY SCHEDULED workitem for station TBDELIV" in one_error_line(nothing)


def test_cancel_as_the_performer_and_as_anyone_else(env: Env) -> None:
    mine = create(env, "CANC1", "TBCANC")
    ok(ups(env, "claim", mine))
    out = ok(ups(env, "cancel", mine, "--reason", "patient unwell"))
    assert "as its performer" in out
    assert env.state(mine) == "CANCELED"
    last = env.wait_reports(mine, 3)[-1]
    assert last["state"] == "CANCELED" and last["detail"] == "patient unwell"

    theirs = create(env, "CANC2", "TBCANC")
    out = ok(ups(env, "cancel", theirs, "--reason", "plan changed"))
    assert "requested" in out
    assert env.state(theirs) == "CANCELED"  # a SCHEDULED step is canceled at once

    busy = create(env, "CANC3", "TBCANC")
    ok(ups(env, "claim", busy, "-aet", "SOMEDEVICE"))
    elsewhere = env.workdir / "other-transactions.json"
    refused = ups(env, "cancel", busy, "--transactions", str(elsewhere))
    assert refused.returncode == 64  # the performer SOMEDEVICE is not a known AE: C312
    assert "0xC312" in one_error_line(refused)
    assert env.state(busy) == "IN PROGRESS"


def test_refusals_are_one_line_with_the_status_in_hex_and_words(env: Env) -> None:
    uid = create(env, "REFUSE1", "TBREF")
    ok(ups(env, "claim", uid))
    again = ups(env, "claim", uid, "--transactions", str(env.workdir / "second.json"))
    assert again.returncode == 64
    line = one_error_line(again)
    assert "0xC302" in line and "already IN PROGRESS" in line

    wrong = ups(env, "complete", uid, "--transaction-uid", "2.25.1234")
    assert wrong.returncode == 64 and "0xC301" in one_error_line(wrong)
    assert env.state(uid) == "IN PROGRESS"

    ok(ups(env, "complete", uid))
    after = ups(env, "progress", uid, "--percent", "10", "--transaction-uid", "2.25.99")
    assert after.returncode == 64 and "0xC300" in one_error_line(after)

    unknown = ups(env, "get", "1.2.3.999999")
    assert unknown.returncode == 64 and "0xC307" in one_error_line(unknown)
    unknown_claim = ups(env, "claim", "1.2.3.999998")
    assert unknown_claim.returncode == 64 and "0xC307" in one_error_line(unknown_claim)


def test_bad_input_is_one_line_and_never_harms_the_transaction_file(env: Env) -> None:
    keyword = ups(env, "find", "-k", "NoSuchKeyword=1")
    assert keyword.returncode == 2 and "unknown attribute keyword" in one_error_line(keyword)
    not_seq = ups(env, "find", "-k", "PatientID[0].CodeValue=1")
    assert not_seq.returncode == 2 and "not a sequence" in one_error_line(not_seq)
    bad_uid = ups(env, "get", "1.2.x")
    assert bad_uid.returncode == 2 and "is not a UID" in bad_uid.stderr

    corrupt = env.workdir / "corrupt.json"
    corrupt.write_text('{"version": 1, "workitems": ')
    before = corrupt.read_bytes()
    uid = create(env, "BAD1", "TBBAD")
    claimed = ups(env, "claim", uid, "--transactions", str(corrupt))
    assert claimed.returncode == 1 and "is corrupt" in one_error_line(claimed)
    assert corrupt.read_bytes() == before
    assert env.state(uid) == "SCHEDULED"  # checked before the claim went out

    missing = ups(env, "complete", uid, "--transactions", str(env.workdir / "none.json"))
    assert missing.returncode == 1 and "no Transaction UID for" in one_error_line(missing)


def test_a_transaction_file_others_can_read_is_warned_about(env: Env) -> None:
    uid = create(env, "OPEN1", "TBOPEN")
    shared = env.workdir / "shared-transactions.json"
    ok(ups(env, "claim", uid, "--transactions", str(shared)))
    assert shared.stat().st_mode & 0o777 == 0o600
    os.chmod(shared, 0o644)
    done = ups(env, "complete", uid, "--transactions", str(shared))
    assert done.returncode == 0, done.stderr
    warning = [line for line in done.stderr.splitlines() if "readable by other users" in line]
    assert len(warning) == 1 and f"transaction file {shared}" in warning[0], done.stderr
    assert "Transaction UIDs" in warning[0] and "0644" in warning[0]
    assert shared.stat().st_mode & 0o777 == 0o600  # rewritten by the command: private again


def test_find_limit_sends_c_cancel_and_json_round_trips(env: Env) -> None:
    from tdwii_cli.client.dicomfiles import write_part10
    from tdwii_cli.ups.workitem import build_workitem

    folder = env.workdir / "many"
    folder.mkdir()
    for i in range(40):
        ds = build_workitem(
            patient_id=f"MANY{i:02d}",
            patient_name=f"Many^{i}",
            label=f"Fx {i}",
            station="TBMANY",
            scheduled=datetime(2031, 1, 2, 8, i),
        )
        write_part10(ds, folder / f"{i:02d}.dcm")
    ok(run(env, "create-workitem", "--mtls", env.server.host, str(env.server.port), str(folder)))

    start = len(env.server.log_text())
    limited = ok(ups(env, "find", "--station", "TBMANY", "--limit", "5", "-v"))
    assert len(rows(limited)) == 5
    env.server.wait_log("canceled after", start)

    out = ok(ups(env, "find", "--station", "TBMANY", "--date", "2031-01-02", "--json"))
    doc = json.loads(out)
    assert len(doc) == 40
    datasets = [Dataset.from_json(item) for item in doc]
    assert {ds.PatientID for ds in datasets} == {f"MANY{i:02d}" for i in range(40)}
    assert all(ds.ScheduledStationNameCodeSequence[0].CodeValue == "TBMANY" for ds in datasets)
    assert [ds.to_json_dict() for ds in datasets] == doc

    by_key = rows(
        ok(
            ups(
                env,
                "find",
                "-k",
                "ScheduledStationNameCodeSequence[0].CodeValue=TBMANY",
                "-k",
                "PatientID=MANY0*",
            )
        )
    )
    assert len(by_key) == 10

    one = ok(ups(env, "get", datasets[0].SOPInstanceUID, "--json"))
    got = Dataset.from_json(json.loads(one))
    assert got.PatientID == datasets[0].PatientID and got.ProcedureStepState == "SCHEDULED"


def test_an_interrupt_cancels_the_query_from_python(env: Env) -> None:
    """What Ctrl-C does in `tdwii ups find`, through the Python API: C-CANCEL (at once, the
    event being set before the first match), then the final Cancel status; the matches
    after it are counted, not handed on."""
    import threading

    from conftest import tls_options
    from tdwii_cli.client.find import find
    from tdwii_cli.client.peer import Peer
    from tdwii_cli.ups.worklist import WorklistQuery

    pressed = threading.Event()
    pressed.set()
    peer = Peer(env.server.host, env.server.port, tls_options(env.workdir / "certs", "client"))
    start = len(env.server.log_text())
    result = find(peer, WorklistQuery(station="TBMANY"), interrupt=pressed)
    assert result.interrupted and result.cancelled
    assert result.count == 0 and result.status == 0xFE00 and not result.aborted
    env.server.wait_log("canceled after", start)


def test_a_piped_find_imports_no_pydicom_rich_or_cryptography(env: Env) -> None:
    """The worklist query is a one-shot command: identifier and rows as bytes, plain text."""
    environ = {**os.environ, "TDWII_TRANSACTIONS": str(env.transactions)}
    command = [sys.executable, "-X", "importtime", "-m", "tdwii_cli", "ups", "find", "--mtls"]
    command += [env.server.host, str(env.server.port), "--station", "TBMANY", "--limit", "3"]
    proc = subprocess.run(
        command,
        cwd=env.workdir,
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
    )
    assert proc.returncode == 0, proc.stderr
    assert len(rows(proc.stdout)) == 3
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "tdwii_cli.client.find" in imported
    heavy = ("pynetdicom", "pydicom", "cryptography", "rich")
    assert not {m for m in imported if m.split(".")[0] in heavy}


def test_subscribe_unsubscribe_and_suspend(env: Env) -> None:
    """Last in the file: it changes the watcher's global subscription (and restores it)."""
    uid = create(env, "SUBS1", "TBSUBS")
    unknown = ups(env, "subscribe", uid, "--receiving-ae", "NOBODY")
    assert unknown.returncode == 64 and "0xC308" in one_error_line(unknown)

    locked = ups(env, "subscribe", "--filter", "ProcedureStepLabel=X*", "--lock")
    locked_too = ups(
        env, "subscribe", "--receiving-ae", "WATCHER", "--filter", "PatientID=SUBS*", "--lock"
    )
    assert locked.returncode == 64 and "0xC308" in one_error_line(locked)  # TDWII is unknown
    assert locked_too.returncode == 0, locked_too.stderr  # a warning: B301, lock not granted
    assert "0xB301" in locked_too.stderr and "0xB301" in locked_too.stdout

    ok(ups(env, "unsubscribe", "--global", "--receiving-ae", "WATCHER"))
    quiet = create(env, "QUIET1", "TBSUBS")
    ok(ups(env, "claim", quiet))
    ok(ups(env, "subscribe", "--receiving-ae", "WATCHER"))
    back = create(env, "BACK1", "TBSUBS")
    env.wait_reports(back, 1)
    # nothing while unsubscribed; then the initial report of the new subscription
    assert [(r["event"], r["state"]) for r in env.reports(quiet)] == [
        ("State Report", "IN PROGRESS")
    ]

    ok(ups(env, "suspend", "--receiving-ae", "WATCHER"))
    later = create(env, "LATER1", "TBSUBS")
    ok(ups(env, "claim", back))  # still subscribed to what it had
    env.wait_reports(back, 3)
    assert env.reports(later) == []
