"""The whole UPS service end to end: `tdwii serve --mtls` in a subprocess, the real SQLite
file, pynetdicom as the delivery devices (TDD) and as subscribers receiving N-EVENT-REPORTs
over mutual TLS with their own certificates from the test PKI; a subscriber from another
PKI, one without TLS, a black-hole subscriber, retention and a restart.

The tests share one server and run in file order (the restart comes last)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from conftest import TdwiiServer, start_tdwii_server, wait_until
from peers import EventReceiver
from tdwii_cli.pki.authority import issue_node
from tdwii_cli.ups.workitem import build_workitem
from upsops import (
    ASSIGNED,
    CANCEL_REQUESTED,
    DAY,
    FILTERED_GLOBAL,
    PROGRESS,
    SCP_STATUS,
    UPS_PULL,
    UPS_PUSH,
    UPS_QUERY,
    UPS_WATCH,
    action,
    claim,
    code,
    create,
    final_attributes,
    find,
    n_set,
    state_of,
    subscribe,
    tdd,
    unsubscribe,
    watcher,
)

# -- the environment: server + subscribers + AE configuration -------------------------------


@dataclass
class Env:
    workdir: Path
    server: TdwiiServer
    watcher: EventReceiver  # WATCHER: globally subscribed from the start
    tdd_events: EventReceiver  # TDD: the delivery device's own event receiver
    filtered: EventReceiver  # FILTERED
    stranger: EventReceiver  # WRONGCA: a certificate and a root CA from another PKI
    plain: EventReceiver  # PLAIN: no "mTLS" in the AE configuration, no TLS
    subscribe_status: int
    ae_config: Path
    servers: list[TdwiiServer] = field(default_factory=list)

    @property
    def db(self) -> Path:
        return self.server.db


@pytest.fixture(scope="module")
def env(
    pki_dir: Path, other_ca_pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("ups")
    certs = workdir / "certs"
    shutil.copytree(pki_dir, certs)
    for node in ("watcher", "tddevents", "filtered"):
        issue_node(certs, "server", node)
    watchers = [
        watcher("WATCHER", certs, "watcher"),
        watcher("TDD", certs, "tddevents"),
        watcher("FILTERED", certs, "filtered"),
        watcher("WRONGCA", other_ca_pki, "worklistmanager"),
        watcher("PLAIN", None),
    ]
    # DEADWATCH: a socket that completes the TCP handshake (backlog) and never says a word
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)
    entities = [
        {"AETitle": w.ae_title, "IPAddr": "127.0.0.1", "Port": w.port, "mTLS": True}
        for w in watchers
    ]
    del entities[-1]["mTLS"]  # PLAIN
    entities.append(
        {
            "AETitle": "DEADWATCH",
            "IPAddr": "127.0.0.1",
            "Port": blackhole.getsockname()[1],
            "mTLS": True,
        }
    )
    ae_config = workdir / "ApplicationEntities.json"
    ae_config.write_text(json.dumps(entities))
    server = start_tdwii_server(workdir, "--ae-config", str(ae_config), log_name="ups")
    current = Env(workdir, server, *watchers, 0, ae_config, [server])
    try:
        with tdd(server, "WATCHER") as assoc:
            current.subscribe_status = subscribe(assoc, "WATCHER", DeletionLock="FALSE")
        yield current
    finally:
        for running in current.servers:  # the test that restarts adds one
            running.stop()
        for receiver in watchers:
            receiver.stop()
        blackhole.close()


# -- the tests (in order: they share the server) --------------------------------------------


def test_global_subscription_then_scheduled_and_assigned_reports_over_mtls(env: Env) -> None:
    assert env.subscribe_status == 0x0000
    with tdd(env.server) as assoc:
        uid = create(assoc, keep_uids=True, patient_id="PAT-SUB")
    report = env.watcher.state_report(uid, "SCHEDULED")
    assert report.info.ProcedureStepState == "SCHEDULED"
    assert report.peer_cn == "worklistmanager"  # the server's own node certificate
    assert report.tls_version in ("TLSv1.2", "TLSv1.3")
    assert report.info.InputReadinessState == "READY"
    # an Assigned report too: the workitem names its treatment machine
    assigned = env.watcher.event(uid, ASSIGNED)
    assert assigned.info.ScheduledStationNameCodeSequence[0].CodeValue == "TB1"


def test_subscribe_statuses(env: Env) -> None:
    with tdd(env.server, "OIS") as assoc:
        # an unknown Receiving AE (not in the AE configuration)
        assert subscribe(assoc, "NOBODY", DeletionLock="FALSE") == 0xC308
        assert subscribe(assoc, "TDD", generate_uid()) == 0xC307
        uid = create(assoc, patient_id="PAT-INSTANCE")
        assert subscribe(assoc, "TDD", uid, DeletionLock="TRUE") == 0
        env.tdd_events.state_report(uid, "SCHEDULED")  # the initial State Report
        assert action(assoc, uid, 5, UPS_WATCH, ReceivingAE="TDD") == 0xC314
        assert unsubscribe(assoc, "TDD", uid) == 0


def test_c_find_by_patient_and_state_and_by_machine_and_date_range(env: Env) -> None:
    with tdd(env.server) as assoc:
        mine = [
            create(assoc, patient_id="PAT-FIND", station="TB7", label=f"Fx {i}") for i in (1, 2)
        ]
        other_day = create(
            assoc, patient_id="PAT-FIND", station="TB7", scheduled=DAY + timedelta(days=3)
        )
        other_machine = create(assoc, patient_id="PAT-ELSE", station="TB8")

        by_patient = find(
            assoc,
            PatientID="PAT-FIND",
            ProcedureStepState="SCHEDULED",
            PatientName="",
            ProcedureStepLabel="",
            TransactionUID="",
            AdmittingDiagnosesDescription="",
            SOPInstanceUID="",
        )
        assert {d.SOPInstanceUID for d in by_patient} == {*mine, other_day}
        for ds in by_patient:
            assert "TransactionUID" not in ds
            assert ds.PatientName == "Doe^Jane"
            assert "AdmittingDiagnosesDescription" in ds and not ds.AdmittingDiagnosesDescription

        wildcard = find(assoc, PatientID="PAT-F?ND", SOPInstanceUID=mine[0])
        assert [d.SOPInstanceUID for d in wildcard] == [mine[0]]
        prefix = find(assoc, PatientID="PAT-*", SOPInstanceUID="")
        assert {d.SOPInstanceUID for d in prefix} >= {mine[0], other_machine}

        # by machine and day: minutes, any coding scheme, over UPS Query
        day = DAY.strftime("%Y%m%d")
        by_machine = find(
            assoc,
            ProcedureStepState="SCHEDULED",
            ScheduledProcedureStepStartDateTime=f"{day}0000-{day}2359",
            ScheduledStationNameCodeSequence=[code("TB7", "")],
            SOPInstanceUID="",
            ProcedureStepLabel="",
        )
        assert sorted(d.ProcedureStepLabel for d in by_machine) == ["Fx 1", "Fx 2"]
        assert by_machine[0].ScheduledStationNameCodeSequence[0].CodeValue == "TB7"
        # the same with seconds and the TDW-II scheme, over UPS Pull
        by_machine = find(
            assoc,
            UPS_PULL,
            ProcedureStepState="SCHEDULED",
            ScheduledStationNameCodeSequence=Sequence([code("TB7")]),
            ScheduledProcedureStepStartDateTime=f"{day}000000-{day}235959",
            SOPInstanceUID="",
        )
        assert sorted(d.SOPInstanceUID for d in by_machine) == sorted(mine)
        assert find(assoc, PatientID="NO-SUCH-PATIENT") == []

        bad = Dataset()
        with warnings.catch_warnings():  # pydicom warns about the invalid DT: that is the point
            warnings.simplefilter("ignore")
            bad.ScheduledProcedureStepStartDateTime = "tomorrow"
        statuses = [s.Status for s, _ in assoc.send_c_find(bad, UPS_QUERY)]
        assert statuses == [0xA900]


def test_claim_set_get_complete_with_state_reports(env: Env) -> None:
    from tdwii_cli.server.store import WorkitemStore

    txn, wrong = generate_uid(), generate_uid()
    with tdd(env.server) as assoc:
        uid = create(assoc, patient_id="PAT-FLOW")
        env.watcher.state_report(uid, "SCHEDULED")
        # a SCHEDULED step cannot be completed
        completed = {"ProcedureStepState": "COMPLETED", "TransactionUID": generate_uid()}
        assert action(assoc, uid, 1, **completed) == 0xC310
        assert claim(assoc, uid, txn) == 0x0000
        assert claim(assoc, uid, generate_uid()) == 0xC302  # a second claim
        report = env.watcher.state_report(uid, "IN PROGRESS")
        assert report.peer_cn == "worklistmanager"

        # the claim is in the database with the performer
        with WorkitemStore(env.db) as store:
            item = store.get(uid)
            assert item is not None
            assert item.state == "IN PROGRESS"
            assert item.transaction_uid == txn
            assert item.performer_ae == "TDD"

        assert n_set(assoc, uid, TransactionUID=wrong, ProcedureStepLabel="x") == 0xC301
        progress = Dataset()
        progress.ProcedureStepProgress = 50
        progress.ProcedureStepProgressDescription = "beam 2 of 4"
        mods = {
            "TransactionUID": txn,
            "ProcedureStepLabel": "Fx 1 (re-labelled)",
            "ProcedureStepProgressInformationSequence": [progress],
        }
        assert n_set(assoc, uid, **mods) == 0x0000
        got = env.watcher.event(uid, PROGRESS)
        seq = got.info.ProcedureStepProgressInformationSequence
        assert seq[0].ProcedureStepProgressDescription == "beam 2 of 4"

        status, attrs = assoc.send_n_get([], UPS_PULL, uid)  # all attributes
        assert status.Status == 0x0000
        assert attrs.ProcedureStepState == "IN PROGRESS"
        assert attrs.ProcedureStepLabel == "Fx 1 (re-labelled)"
        assert "TransactionUID" not in attrs
        assert attrs.ProcedureStepProgressInformationSequence[0].ProcedureStepProgress == 50
        status, attrs = assoc.send_n_get([0x00081195, 0x00741000], UPS_PULL, uid)
        assert status.Status == 0x0000 and "TransactionUID" not in attrs
        assert attrs.ProcedureStepState == "IN PROGRESS"

        # completion needs the Transaction UID, then the final-state attributes
        done = {"ProcedureStepState": "COMPLETED", "TransactionUID": txn}
        assert action(assoc, uid, 1, **{**done, "TransactionUID": wrong}) == 0xC301
        assert action(assoc, uid, 1, **done) == 0xC304  # no final-state attributes yet
        assert n_set(assoc, uid, **final_attributes(txn)) == 0x0000
        assert action(assoc, uid, 1, **done) == 0x0000
        env.watcher.state_report(uid, "COMPLETED")
        assert action(assoc, uid, 1, **done) == 0xB306
        assert n_set(assoc, uid, TransactionUID=txn, ProcedureStepLabel="late") == 0xC300
        assert action(assoc, uid, 2, UPS_PUSH) == 0xC311  # Request Cancel of a final step

        # COMPLETED workitems stay queryable
        final = find(assoc, SOPInstanceUID=uid, ProcedureStepState="")
        assert [f.ProcedureStepState for f in final] == ["COMPLETED"]
        status, _ = assoc.send_n_get([], UPS_PULL, generate_uid())
        assert status.Status == 0xC307


def test_concurrent_claims_one_wins(env: Env) -> None:
    """Two delivery devices claim the same workitems at the same moment: one gets it,
    the other C302, and the database names the winner's Transaction UID."""
    from tdwii_cli.server.store import WorkitemStore

    with tdd(env.server) as assoc:
        uids = [create(assoc, patient_id="PAT-RACE", station="TB6") for _ in range(5)]
    results: dict[str, list[tuple[int, str]]] = {uid: [] for uid in uids}
    barrier = threading.Barrier(2)

    def race(ae_title: str) -> None:
        with tdd(env.server, ae_title) as mine:
            for uid in uids:
                txn = generate_uid()
                barrier.wait(10)
                results[uid].append((claim(mine, uid, txn), txn))

    threads = [threading.Thread(target=race, args=(ae,)) for ae in ("TDD", "TDD2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    with WorkitemStore(env.db) as store:
        for uid, outcome in results.items():
            assert sorted(status for status, _ in outcome) == [0x0000, 0xC302], outcome
            winner = next(txn for status, txn in outcome if status == 0)
            item = store.get(uid)
            assert item is not None and item.transaction_uid == winner


def test_cancel_of_a_scheduled_step(env: Env) -> None:
    with tdd(env.server, "OIS") as assoc:
        uid = create(assoc, patient_id="PAT-CANCEL")
        assert action(assoc, uid, 2, UPS_PUSH, ReasonForCancellation="plan revised") == 0
        report = env.watcher.state_report(uid, "CANCELED")
        assert report.info.ReasonForCancellation == "plan revised"
        assert action(assoc, uid, 2, UPS_PUSH) == 0xB304
        assert state_of(assoc, uid) == (0x0000, "CANCELED")
        status, attrs = assoc.send_n_get([0x00741000, 0x00741002], UPS_PULL, uid)
        assert status.Status == 0x0000
        assert attrs.ProcedureStepState == "CANCELED"
        assert attrs.ProcedureStepProgressInformationSequence[0].ReasonForCancellation == (
            "plan revised"
        )


def test_request_cancel_in_progress_reaches_the_performer(env: Env) -> None:
    txn = generate_uid()
    with tdd(env.server, "TDD") as device:
        uid = create(device, patient_id="PAT-RQCANCEL")
        assert claim(device, uid, txn) == 0
    with tdd(env.server, "OIS") as ois:
        assert action(ois, uid, 2, UPS_PUSH, ReasonForCancellation="machine fault") == 0
    to_performer = env.tdd_events.event(uid, CANCEL_REQUESTED)
    assert to_performer.info.RequestingAE == "OIS"
    assert to_performer.info.ReasonForCancellation == "machine fault"
    assert to_performer.peer_cn == "worklistmanager"
    assert env.watcher.event(uid, CANCEL_REQUESTED).info.RequestingAE == "OIS"
    with tdd(env.server, "TDD") as device:  # the performer decides: it cancels
        cancel = {"ProcedureStepState": "CANCELED", "TransactionUID": txn}
        assert action(device, uid, 1, **cancel) == 0
        assert action(device, uid, 2, UPS_PUSH) == 0xB304
    env.watcher.state_report(uid, "CANCELED")
    with tdd(env.server, "STRANGER") as stranger:  # a performer nobody can reach: C312
        other = create(stranger, patient_id="PAT-RQCANCEL")
        assert claim(stranger, other, generate_uid()) == 0
        assert action(stranger, other, 2, UPS_PUSH) == 0xC312


def test_filtered_global_and_unsubscribe(env: Env) -> None:
    filtered, watcher = env.filtered, env.watcher
    with tdd(env.server, "FILTERED") as assoc:
        keys = Dataset()
        keys.ReceivingAE = "FILTERED"
        keys.DeletionLock = "FALSE"
        keys.ScheduledStationNameCodeSequence = Sequence([code("TB9", meaning="TB9")])
        status, _ = assoc.send_n_action(keys, 3, UPS_WATCH, FILTERED_GLOBAL)
        assert status.Status == 0x0000
        elsewhere = create(assoc, patient_id="PAT-FILTER", station="TB1")
        here = create(assoc, patient_id="PAT-FILTER", station="TB9")
        filtered.state_report(here, "SCHEDULED")
        watcher.state_report(elsewhere, "SCHEDULED")  # delivered to the global subscriber
        # the filtered subscriber had its chance: the reports go out in order per AE
        time.sleep(0.3)
        assert not [r for r in filtered.seen() if r.uid == elsewhere]

        # unsubscribed from one workitem: no more reports for it, others still come
        assert unsubscribe(assoc, "FILTERED", here) == 0
        assert claim(assoc, here, generate_uid()) == 0
        other = create(assoc, patient_id="PAT-FILTER", station="TB9")
        filtered.state_report(other, "SCHEDULED")
        watcher.state_report(here, "IN PROGRESS")
        time.sleep(0.3)
        assert not filtered.got_state(here, "IN PROGRESS")


def test_dead_subscriber_does_not_slow_answers(env: Env) -> None:
    with tdd(env.server, "OIS") as assoc:
        assert subscribe(assoc, "DEADWATCH") == 0
        timings = []
        uids = []
        started = time.monotonic()
        for i in range(5):
            start = time.perf_counter()
            uid = create(assoc, patient_id="PAT-SLOW", station="TB2", label=f"Fx {i}")
            assert claim(assoc, uid, generate_uid()) == 0
            timings.append(time.perf_counter() - start)
            uids.append(uid)
        elapsed = time.monotonic() - started
        # 10 operations, each of which queued reports for a subscriber that never answers
        assert max(timings) < 1.0, timings
        assert elapsed < 2.0, f"{elapsed:.2f} s for 10 operations with a dead subscriber"
        for uid in uids:  # the live watcher still gets its reports promptly
            env.watcher.state_report(uid, "IN PROGRESS", timeout=5)
        assert unsubscribe(assoc, "DEADWATCH") == 0
    assert "DEADWATCH" in env.server.wait_log("not delivered")
    env.server.wait_log("queued event report(s) for DEADWATCH")  # dropped on unsubscribe


def test_subscriber_with_a_foreign_certificate_gets_nothing(env: Env) -> None:
    """The server checks the subscriber's certificate against its own CA: no report leaks
    to a peer from another PKI; the failure is logged and retried in the background."""
    start = len(env.server.log_text())
    with tdd(env.server, "OIS") as assoc:
        assert subscribe(assoc, "WRONGCA") == 0
        began = time.monotonic()
        uid = create(assoc, patient_id="PAT-WRONGCA", station="TB5")
        assert time.monotonic() - began < 1.0
    env.watcher.state_report(uid, "SCHEDULED")
    text = env.server.wait_log("retrying event reports to WRONGCA", start=start, timeout=10)
    assert "event reports to WRONGCA" in text and "not delivered" in text
    assert "certificate" in text.lower()
    assert env.stranger.seen() == []


def test_subscriber_without_mtls_in_the_ae_configuration_gets_plain_dicom(env: Env) -> None:
    with tdd(env.server, "OIS") as assoc:
        assert subscribe(assoc, "PLAIN") == 0
        uid = create(assoc, patient_id="PAT-PLAIN", station="TB5")
    report = env.plain.state_report(uid, "SCHEDULED")
    assert report.peer_cn is None and report.tls_version is None  # not TLS


def test_retention_purges_final_workitems_without_deletion_lock(env: Env) -> None:
    """`--retention 1s` (a server of its own): a CANCELED workitem goes, one with a
    Deletion Lock stays until its subscriber unsubscribes, IN PROGRESS is never touched."""
    server = start_tdwii_server(
        env.workdir,
        "--ae-config",
        str(env.ae_config),
        "--retention",
        "1s",
        db=env.workdir / "retention.sqlite",
        log_name="ups-retention",
    )
    try:
        with tdd(server) as assoc:
            locked, unlocked, running = (create(assoc, station="TB4") for _ in range(3))
            assert subscribe(assoc, "WATCHER", locked, DeletionLock="TRUE") == 0
            assert action(assoc, locked, 2, UPS_PUSH) == 0
            assert action(assoc, unlocked, 2, UPS_PUSH) == 0
            assert claim(assoc, running, generate_uid()) == 0
            wait_until(
                lambda: state_of(assoc, unlocked)[0] == 0xC307,
                8,
                "the unlocked CANCELED workitem to be purged",
                interval=0.2,
            )
            assert find(assoc, SOPInstanceUID=unlocked) == []
            assert state_of(assoc, locked) == (0x0000, "CANCELED")
            assert state_of(assoc, running) == (0x0000, "IN PROGRESS")
            # the lock goes with the subscription: then the workitem may go too
            assert unsubscribe(assoc, "WATCHER", locked) == 0
            wait_until(
                lambda: state_of(assoc, locked)[0] == 0xC307,
                8,
                "the workitem, unlocked now, to be purged",
                interval=0.2,
            )
    finally:
        server.stop()


def test_c_cancel_stops_a_long_c_find(env: Env) -> None:
    from tdwii_cli.server.store import WorkitemStore

    with WorkitemStore(env.db) as store:  # a second writer on the live database (WAL)
        for i in range(300):
            store.create(
                build_workitem(
                    patient_id="PAT-MANY", patient_name="Many^M", label=f"Fx {i}", station="TB10"
                )
            )
    with tdd(env.server) as assoc:
        q = Dataset()
        q.PatientID = "PAT-MANY"
        q.SOPInstanceUID = ""
        # The server may stream all 300 matches before the C-CANCEL reaches it (a loaded
        # machine delays this reader): then the cancel came too late and we try again.
        for msg_id in (7, 8, 9):
            responses = assoc.send_c_find(q, UPS_QUERY, msg_id=msg_id)
            first_status, first = next(responses)
            assert first_status.Status == 0xFF00 and first.PatientID == "PAT-MANY"
            assoc.send_c_cancel(msg_id, query_model=UPS_QUERY)
            statuses = [s.Status for s, _ in responses]
            if statuses[-1] != 0x0000:
                break
        assert statuses[-1] == 0xFE00, f"{len(statuses) + 1} responses, last {statuses[-1]:#x}"
        assert len(statuses) < 300
        env.server.wait_log(f"received C-CANCEL-RQ of id={msg_id}")  # the log ties it to its C-FIND
        # the association is still usable after the cancel
        assert len(find(assoc, PatientID="PAT-MANY", ProcedureStepLabel="Fx 299")) == 1


def test_subscriptions_survive_a_restart(env: Env) -> None:
    assert env.server.stop() == 0
    env.server = start_tdwii_server(
        env.workdir, "--ae-config", str(env.ae_config), db=env.db, log_name="ups-again"
    )
    env.servers.append(env.server)
    restarted = env.watcher.wait_for(lambda r: r.event_type == SCP_STATUS)
    assert restarted.info.SCPStatus == "RESTARTED"
    with tdd(env.server, "OIS") as assoc:
        uid = create(assoc, patient_id="PAT-RESTART", station="TB3")
    env.watcher.state_report(uid, "SCHEDULED")
