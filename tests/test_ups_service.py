"""The whole UPS service end to end: `tdwii serve --mtls` in a subprocess, pynetdicom as the
delivery device (TDD) and as watchers receiving N-EVENT-REPORTs over mutual TLS with their
own certificates from the test PKI, a black-hole subscriber, and a restart."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE, evt

from conftest import TdwiiServer, free_port, start_tdwii_server
from tdwii_cli.pki import issue_node
from tdwii_cli.scu import keep_responses_for_the_caller
from tdwii_cli.workitem import build_workitem

UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
UPS_WATCH = "1.2.840.10008.5.1.4.34.6.2"
UPS_PULL = "1.2.840.10008.5.1.4.34.6.3"
UPS_EVENT = "1.2.840.10008.5.1.4.34.6.4"
UPS_QUERY = "1.2.840.10008.5.1.4.34.6.5"
GLOBAL = "1.2.840.10008.5.1.4.34.5"
CA = "certs/rootCA/rootCA.pem"
CLIENT = "certs/clients/workitemcreator/workitemcreator"
TOMORROW = (datetime.now() + timedelta(days=1)).replace(hour=9, minute=0, second=0, microsecond=0)


# -- watchers: pynetdicom AEs receiving N-EVENT-REPORT over mTLS ------------------------------


@dataclass
class Received:
    event_type: int
    uid: str
    info: Dataset
    peer_cn: str | None
    tls_version: str | None
    at: float


class Watcher:
    """A pynetdicom UPS Event receiver on a loopback port, mTLS with its own certificate."""

    def __init__(self, workdir: Path, ae_title: str, node: str) -> None:
        self.ae_title = ae_title
        self.events: list[Received] = []
        self.cond = threading.Condition()
        folder = workdir / "certs" / "servers" / node
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(folder / f"{node}.pem", folder / f"{node}.key")
        ctx.load_verify_locations(workdir / CA)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ae = AE(ae_title)
        ae.add_supported_context(UPS_EVENT)
        self.port = free_port()
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            ssl_context=ctx,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_event)],
        )

    def _on_event(self, event: Any) -> tuple[int, None]:
        sock = event.assoc.dul.socket.socket
        cn = None
        for rdn in (sock.getpeercert() or {}).get("subject", ()):
            for key, value in rdn:
                if key == "commonName":
                    cn = value
        received = Received(
            int(event.request.EventTypeID),
            str(event.request.AffectedSOPInstanceUID),
            event.event_information,
            cn,
            sock.version(),
            time.monotonic(),
        )
        with self.cond:
            self.events.append(received)
            self.cond.notify_all()
        return 0x0000, None

    def wait_for(self, what: Callable[[Received], bool], timeout: float = 15.0) -> Received:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for r in self.events:
                    if what(r):
                        return r
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(r.event_type, r.uid[-12:]) for r in self.events]
                    raise AssertionError(f"{self.ae_title}: event not received; got {seen}")
                self.cond.wait(left)

    def state_report(self, uid: str, state: str, timeout: float = 15.0) -> Received:
        return self.wait_for(
            lambda r: r.event_type == 1 and r.uid == uid and r.info.ProcedureStepState == state,
            timeout,
        )

    def stop(self) -> None:
        self.server.shutdown()


# -- the TDD (delivery device) --------------------------------------------------------------


@contextmanager
def tdd(server: TdwiiServer, ae_title: str = "TDD") -> Iterator[Any]:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(server.workdir / CA)
    ctx.load_cert_chain(server.workdir / f"{CLIENT}.pem", server.workdir / f"{CLIENT}.key")
    ae = AE(ae_title)
    for uid in (UPS_PUSH, UPS_PULL, UPS_WATCH, UPS_QUERY):
        ae.add_requested_context(uid)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15

    def nodelay(event: Any) -> None:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    assoc = ae.associate(
        server.host,
        server.port,
        ae_title="UPSSCP",
        tls_args=(ctx, "localhost"),
        evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)],
    )
    assert assoc.is_established, "cannot associate with tdwii serve"
    keep_responses_for_the_caller(assoc)  # pynetdicom may otherwise lose a fast response
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def create(assoc: Any, **kw: Any) -> Dataset:
    kw.setdefault("patient_id", "PAT-UPS")
    kw.setdefault("patient_name", "Doe^Jane")
    kw.setdefault("label", "Fx 1")
    kw.setdefault("station", "TB1")
    kw.setdefault("scheduled", TOMORROW)
    ds = build_workitem(**kw)
    status, _ = assoc.send_n_create(ds, UPS_PUSH, ds.SOPInstanceUID)
    assert status.Status == 0x0000
    return ds


def action(assoc: Any, uid: str, action_type: int, sop_class: str = UPS_PULL, **info: Any) -> int:
    ds = Dataset()
    for keyword, value in info.items():
        setattr(ds, keyword, value)
    # no Action Information at all when empty (pynetdicom would announce an empty data set)
    status, _ = assoc.send_n_action(ds if len(ds) else None, action_type, sop_class, uid)
    return int(status.Status)


def claim(assoc: Any, uid: str, txn: str) -> int:
    return action(assoc, uid, 1, ProcedureStepState="IN PROGRESS", TransactionUID=txn)


def n_set(assoc: Any, uid: str, **mods: Any) -> int:
    ds = Dataset()
    for keyword, value in mods.items():
        setattr(ds, keyword, value)
    status, _ = assoc.send_n_set(ds, UPS_PULL, uid)
    return int(status.Status)


def c_find(assoc: Any, identifier: Dataset) -> list[Dataset]:
    found = []
    for status, ident in assoc.send_c_find(identifier, UPS_QUERY):
        assert status is not None and status.Status in (0x0000, 0xFF00, 0xFF01), status
        if status.Status in (0xFF00, 0xFF01):
            found.append(ident)
    return found


def code_item(value: str, scheme: str = "") -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    return item


def final_attributes(txn: str) -> dict[str, Any]:
    item = Dataset()
    item.PerformedProcedureStepStartDateTime = "20240506080000"
    item.PerformedProcedureStepEndDateTime = "20240506081500"
    station = code_item("TB1", "99TDWII")
    station.CodeMeaning = "TB1"
    work = code_item("121726", "DCM")
    work.CodeMeaning = "RT Treatment with Internal Verification"
    item.PerformedStationNameCodeSequence = Sequence([station])
    item.PerformedWorkitemCodeSequence = Sequence([work])
    item.OutputInformationSequence = Sequence()
    return {"TransactionUID": txn, "UnifiedProcedureStepPerformedProcedureSequence": [item]}


# -- the environment: server + watchers + AE configuration ---------------------------------


@dataclass
class Env:
    workdir: Path
    server: TdwiiServer
    watcher: Watcher
    tdd_events: Watcher
    subscribe_status: int
    db: Path
    ae_config: Path
    blackhole: socket.socket


@pytest.fixture(scope="module")
def env(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("ups")
    shutil.copytree(pki_dir, workdir / "certs")
    issue_node(workdir / "certs", "server", "watcher")
    issue_node(workdir / "certs", "server", "tddevents")
    watcher = Watcher(workdir, "WATCHER", "watcher")
    tdd_events = Watcher(workdir, "TDD", "tddevents")
    # a subscriber that accepts TCP connections and never answers (its TLS handshake hangs)
    blackhole = socket.socket()
    blackhole.bind(("127.0.0.1", 0))
    blackhole.listen(64)
    ae_config = workdir / "ApplicationEntities.json"
    ae_config.write_text(
        json.dumps(
            [
                {"AETitle": "WATCHER", "IPAddr": "127.0.0.1", "Port": watcher.port, "mTLS": True},
                {"AETitle": "TDD", "IPAddr": "127.0.0.1", "Port": tdd_events.port, "mTLS": True},
                {
                    "AETitle": "DEADWATCH",
                    "IPAddr": "127.0.0.1",
                    "Port": blackhole.getsockname()[1],
                    "mTLS": True,
                },
            ]
        )
    )
    db = workdir / "ups.sqlite"
    server = start_tdwii_server(workdir, "--ae-config", str(ae_config), db=db, log_name="ups")
    current: Env | None = None
    try:
        with tdd(server, "WATCHER") as assoc:
            status = action(
                assoc, GLOBAL, 3, UPS_WATCH, ReceivingAE="WATCHER", DeletionLock="FALSE"
            )
        current = Env(workdir, server, watcher, tdd_events, status, db, ae_config, blackhole)
        yield current
    finally:
        server.stop()
        if current is not None:
            current.server.stop()  # a test may have restarted it
        watcher.stop()
        tdd_events.stop()
        blackhole.close()


# -- the tests ------------------------------------------------------------------------------


def test_global_subscription_then_scheduled_report_over_mtls(env: Env) -> None:
    assert env.subscribe_status == 0x0000
    with tdd(env.server) as assoc:
        ds = create(assoc, patient_id="PAT-SUB")
    report = env.watcher.state_report(ds.SOPInstanceUID, "SCHEDULED")
    assert report.peer_cn == "worklistmanager"  # the server's own node certificate
    assert report.tls_version in ("TLSv1.2", "TLSv1.3")
    assert report.info.InputReadinessState == "READY"
    # an Assigned report too: the workitem names its treatment machine
    assigned = env.watcher.wait_for(lambda r: r.event_type == 5 and r.uid == ds.SOPInstanceUID)
    assert assigned.info.ScheduledStationNameCodeSequence[0].CodeValue == "TB1"


def test_c_find_by_patient_and_state_and_by_machine_and_date_range(env: Env) -> None:
    with tdd(env.server) as assoc:
        mine = [
            create(assoc, patient_id="PAT-FIND", station="TB7", label=f"Fx {i}") for i in (1, 2)
        ]
        other_day = create(
            assoc, patient_id="PAT-FIND", station="TB7", scheduled=TOMORROW + timedelta(days=3)
        )
        create(assoc, patient_id="PAT-ELSE", station="TB8")
        q = Dataset()
        q.PatientID = "PAT-FIND"
        q.ProcedureStepState = "SCHEDULED"
        q.PatientName = ""
        q.ProcedureStepLabel = ""
        q.TransactionUID = ""
        q.AdmittingDiagnosesDescription = ""
        q.SOPInstanceUID = ""
        found = c_find(assoc, q)
        assert {f.SOPInstanceUID for f in found} == {
            *(d.SOPInstanceUID for d in mine),
            other_day.SOPInstanceUID,
        }
        for f in found:
            assert "TransactionUID" not in f
            assert f.PatientName == "Doe^Jane"
            assert "AdmittingDiagnosesDescription" in f and not f.AdmittingDiagnosesDescription

        day = TOMORROW.strftime("%Y%m%d")
        q = Dataset()
        q.ProcedureStepState = "SCHEDULED"
        q.ScheduledProcedureStepStartDateTime = f"{day}0000-{day}2359"
        q.ScheduledStationNameCodeSequence = [code_item("TB7")]
        q.SOPInstanceUID = ""
        q.ProcedureStepLabel = ""
        found = c_find(assoc, q)
        assert sorted(f.ProcedureStepLabel for f in found) == ["Fx 1", "Fx 2"]
        assert found[0].ScheduledStationNameCodeSequence[0].CodeValue == "TB7"

        bad = Dataset()
        bad.ScheduledProcedureStepStartDateTime = "tomorrow"
        statuses = [s.Status for s, _ in assoc.send_c_find(bad, UPS_QUERY)]
        assert statuses == [0xA900]


def test_claim_progress_get_complete_and_state_reports(env: Env) -> None:
    txn, wrong = generate_uid(), generate_uid()
    with tdd(env.server) as assoc:
        ds = create(assoc, patient_id="PAT-FLOW")
        uid = ds.SOPInstanceUID
        env.watcher.state_report(uid, "SCHEDULED")
        assert claim(assoc, uid, txn) == 0x0000
        assert claim(assoc, uid, generate_uid()) == 0xC302  # a second claim
        report = env.watcher.state_report(uid, "IN PROGRESS")
        assert report.peer_cn == "worklistmanager"

        assert n_set(assoc, uid, TransactionUID=wrong, ProcedureStepLabel="x") == 0xC301
        progress = Dataset()
        progress.ProcedureStepProgress = 50
        progress.ProcedureStepProgressDescription = "beam 2 of 4"
        mods = {"TransactionUID": txn, "ProcedureStepProgressInformationSequence": [progress]}
        assert n_set(assoc, uid, **mods) == 0x0000
        got = env.watcher.wait_for(lambda r: r.event_type == 3 and r.uid == uid)
        seq = got.info.ProcedureStepProgressInformationSequence
        assert seq[0].ProcedureStepProgressDescription == "beam 2 of 4"

        status, attrs = assoc.send_n_get([], UPS_PULL, uid)  # all attributes
        assert status.Status == 0x0000
        assert attrs.ProcedureStepState == "IN PROGRESS"
        assert "TransactionUID" not in attrs
        assert attrs.ProcedureStepProgressInformationSequence[0].ProcedureStepProgress == 50
        status, attrs = assoc.send_n_get([0x00081195, 0x00741000], UPS_PULL, uid)
        assert status.Status == 0x0000 and "TransactionUID" not in attrs
        assert attrs.ProcedureStepState == "IN PROGRESS"

        done = {"ProcedureStepState": "COMPLETED", "TransactionUID": txn}
        assert action(assoc, uid, 1, **done) == 0xC304  # no final-state attributes yet
        assert n_set(assoc, uid, **final_attributes(txn)) == 0x0000
        assert action(assoc, uid, 1, **{**done, "TransactionUID": wrong}) == 0xC301
        assert action(assoc, uid, 1, **done) == 0x0000
        env.watcher.state_report(uid, "COMPLETED")
        assert action(assoc, uid, 1, **done) == 0xB306
        assert n_set(assoc, uid, TransactionUID=txn, ProcedureStepLabel="late") == 0xC300

        q = Dataset()  # COMPLETED workitems stay queryable
        q.SOPInstanceUID = uid
        q.ProcedureStepState = ""
        assert [f.ProcedureStepState for f in c_find(assoc, q)] == ["COMPLETED"]
        status, _ = assoc.send_n_get([], UPS_PULL, generate_uid())
        assert status.Status == 0xC307


def test_cancel_of_a_scheduled_step(env: Env) -> None:
    with tdd(env.server, "OIS") as assoc:
        ds = create(assoc, patient_id="PAT-CANCEL")
        uid = ds.SOPInstanceUID
        assert action(assoc, uid, 2, UPS_PUSH, ReasonForCancellation="plan revised") == 0
        report = env.watcher.state_report(uid, "CANCELED")
        assert report.info.ReasonForCancellation == "plan revised"
        assert action(assoc, uid, 2, UPS_PUSH) == 0xB304
        status, attrs = assoc.send_n_get([0x00741000, 0x00741002], UPS_PULL, uid)
        assert status.Status == 0x0000
        assert attrs.ProcedureStepState == "CANCELED"
        assert attrs.ProcedureStepProgressInformationSequence[0].ReasonForCancellation == (
            "plan revised"
        )


def test_request_cancel_in_progress_reaches_the_performer(env: Env) -> None:
    txn = generate_uid()
    with tdd(env.server, "TDD") as device:
        ds = create(device, patient_id="PAT-RQCANCEL")
        uid = ds.SOPInstanceUID
        assert claim(device, uid, txn) == 0
    with tdd(env.server, "OIS") as ois:
        assert action(ois, uid, 2, UPS_PUSH, ReasonForCancellation="machine fault") == 0
    to_performer = env.tdd_events.wait_for(lambda r: r.event_type == 2 and r.uid == uid)
    assert to_performer.info.RequestingAE == "OIS"
    assert to_performer.info.ReasonForCancellation == "machine fault"
    assert to_performer.peer_cn == "worklistmanager"
    env.watcher.wait_for(lambda r: r.event_type == 2 and r.uid == uid)
    with tdd(env.server, "TDD") as device:  # the performer decides: it cancels
        cancel = {"ProcedureStepState": "CANCELED", "TransactionUID": txn}
        assert action(device, uid, 1, **cancel) == 0
        assert action(device, uid, 2, UPS_PUSH) == 0xB304
    env.watcher.state_report(uid, "CANCELED")
    with tdd(env.server, "STRANGER") as stranger:  # a performer nobody can reach: C312
        other = create(stranger, patient_id="PAT-RQCANCEL")
        assert claim(stranger, other.SOPInstanceUID, generate_uid()) == 0
        assert action(stranger, other.SOPInstanceUID, 2, UPS_PUSH) == 0xC312


def test_subscribe_statuses(env: Env) -> None:
    with tdd(env.server, "OIS") as assoc:
        assert action(assoc, GLOBAL, 3, UPS_WATCH, ReceivingAE="NOBODY") == 0xC308
        assert action(assoc, generate_uid(), 3, UPS_WATCH, ReceivingAE="TDD") == 0xC307
        ds = create(assoc, patient_id="PAT-INSTANCE")
        uid = ds.SOPInstanceUID
        assert action(assoc, uid, 3, UPS_WATCH, ReceivingAE="TDD", DeletionLock="TRUE") == 0
        env.tdd_events.state_report(uid, "SCHEDULED")  # the initial State Report
        assert action(assoc, uid, 5, UPS_WATCH, ReceivingAE="TDD") == 0xC314
        assert action(assoc, uid, 4, UPS_WATCH, ReceivingAE="TDD") == 0


def test_a_subscriber_that_is_down_does_not_slow_the_answers(env: Env) -> None:
    with tdd(env.server, "OIS") as assoc:
        assert action(assoc, GLOBAL, 3, UPS_WATCH, ReceivingAE="DEADWATCH") == 0
        timings = []
        uids = []
        for i in range(5):
            start = time.perf_counter()
            ds = create(assoc, patient_id="PAT-SLOW", label=f"Fx {i}")
            txn = generate_uid()
            assert claim(assoc, ds.SOPInstanceUID, txn) == 0
            timings.append(time.perf_counter() - start)
            uids.append(ds.SOPInstanceUID)
        for uid in uids:  # the live watcher still gets its reports promptly
            env.watcher.state_report(uid, "IN PROGRESS", timeout=5)
        assert max(timings) < 1.0, timings
        assert action(assoc, GLOBAL, 4, UPS_WATCH, ReceivingAE="DEADWATCH") == 0
    assert "DEADWATCH" in env.server.wait_log("not delivered")


def test_subscriptions_survive_a_restart(env: Env) -> None:
    assert env.server.stop() == 0
    env.server = start_tdwii_server(
        env.workdir, "--ae-config", str(env.ae_config), db=env.db, log_name="ups-again"
    )
    restarted = env.watcher.wait_for(lambda r: r.event_type == 4)
    assert restarted.info.SCPStatus == "RESTARTED"
    with tdd(env.server, "OIS") as assoc:
        ds = create(assoc, patient_id="PAT-RESTART")
    env.watcher.state_report(ds.SOPInstanceUID, "SCHEDULED")


def test_c_cancel_stops_a_long_c_find(env: Env) -> None:
    from tdwii_cli.ups.store import WorkitemStore

    with WorkitemStore(env.db) as store:  # a second writer on the live database (WAL)
        for i in range(300):
            store.create(
                build_workitem(
                    patient_id="PAT-MANY", patient_name="Many^M", label=f"Fx {i}", station="TB9"
                )
            )
    with tdd(env.server) as assoc:
        q = Dataset()
        q.PatientID = "PAT-MANY"
        q.SOPInstanceUID = ""
        responses = assoc.send_c_find(q, UPS_QUERY, msg_id=7)
        first_status, first = next(responses)
        assert first_status.Status == 0xFF00 and first.PatientID == "PAT-MANY"
        assoc.send_c_cancel(7, query_model=UPS_QUERY)
        statuses = [s.Status for s, _ in responses]
        assert statuses[-1] == 0xFE00  # Cancel
        assert len(statuses) < 300
        assert echo_after_cancel(assoc)


def echo_after_cancel(assoc: Any) -> bool:
    """The association is still usable after the cancel (a C-FIND on a single UID)."""
    q = Dataset()
    q.PatientID = "PAT-MANY"
    q.ProcedureStepLabel = "Fx 299"
    return len(c_find(assoc, q)) == 1
