"""The UPS service end to end: `tdwii serve --mtls` in a subprocess, pynetdicom as the
delivery device (C-FIND, claim, N-SET, N-GET, complete, cancel) and as a watcher that
listens over mutual TLS for the N-EVENT-REPORTs, the real SQLite file, a restart."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE, evt

from conftest import TdwiiServer, free_port, start_tdwii_server
from tdwii_cli.workitem import build_workitem

UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
UPS_WATCH = "1.2.840.10008.5.1.4.34.6.2"
UPS_PULL = "1.2.840.10008.5.1.4.34.6.3"
UPS_EVENT = "1.2.840.10008.5.1.4.34.6.4"
UPS_QUERY = "1.2.840.10008.5.1.4.34.6.5"
GLOBAL = "1.2.840.10008.5.1.4.34.5"
FILTERED_GLOBAL = "1.2.840.10008.5.1.4.34.5.1"
NODE = "certs/clients/workitemcreator/workitemcreator"
CA = "certs/rootCA/rootCA.pem"
DAY = datetime(2031, 5, 14, 9, 0, 0)


def _client_context(workdir: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(workdir / CA)
    ctx.load_cert_chain(workdir / f"{NODE}.pem", workdir / f"{NODE}.key")
    return ctx


def _server_context(workdir: Path) -> ssl.SSLContext:
    """The watcher's listening side: its own certificate, the clients' CA, mTLS."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(workdir / f"{NODE}.pem", workdir / f"{NODE}.key")
    ctx.load_verify_locations(workdir / CA)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class Watcher:
    """A pynetdicom UPS Event SCP on a loopback port that only speaks mutual TLS."""

    def __init__(self, workdir: Path, ae_title: str = "WATCHER", tls: bool = True) -> None:
        self.reports: list[tuple[int, str, Dataset]] = []
        self.peer_certs: list[Any] = []
        self.cond = threading.Condition()
        self.port = free_port()
        self.ae = AE(ae_title=ae_title)
        self.ae.add_supported_context(UPS_EVENT)
        self.ae.add_supported_context(UPS_PUSH)
        self.ae.network_timeout = self.ae.acse_timeout = self.ae.dimse_timeout = 10
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            ssl_context=_server_context(workdir) if tls else None,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)],
        )

    def _on_report(self, event: Any) -> tuple[int, None]:
        req = event.request
        info = event.event_information
        sock = event.assoc.dul.socket.socket
        self.peer_certs.append(sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None)
        with self.cond:
            self.reports.append((int(req.EventTypeID), str(req.AffectedSOPInstanceUID), info))
            self.cond.notify_all()
        return 0x0000, None

    def wait_for(
        self, uid: str, event_type: int, state: str | None = None, timeout: float = 10.0
    ) -> Dataset:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                for etype, got_uid, info in self.reports:
                    if got_uid != uid or etype != event_type:
                        continue
                    if state is None or info.get("ProcedureStepState") == state:
                        return info
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(t, u, i.get("ProcedureStepState")) for t, u, i in self.reports]
                    raise AssertionError(f"no report {event_type}/{state} for {uid}: {seen}")
                self.cond.wait(left)

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture(scope="module")
def ups_env(
    pki_dir: Path, other_ca_pki: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """A workdir with certs and an AE configuration naming WATCHER (mTLS, listening),
    DEADSUB (mTLS, nothing listens) and TDD (the delivery device; nothing listens)."""
    workdir = tmp_path_factory.mktemp("ups-e2e")
    shutil.copytree(pki_dir, workdir / "certs")
    watcher = Watcher(workdir)
    filtered = Watcher(workdir, "FILTERED")
    stranger = Watcher(other_ca_pki.parent, "WRONGCA")  # a certificate from another CA
    plain = Watcher(workdir, "PLAIN", tls=False)  # "mTLS": false in the AE configuration
    # DEADSUB: a socket that completes the TCP handshake (backlog) and then never says a word
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)
    entities = [
        {"AETitle": "WATCHER", "IPAddr": "127.0.0.1", "Port": watcher.port, "mTLS": True},
        {"AETitle": "FILTERED", "IPAddr": "127.0.0.1", "Port": filtered.port, "mTLS": True},
        {"AETitle": "WRONGCA", "IPAddr": "127.0.0.1", "Port": stranger.port, "mTLS": True},
        {"AETitle": "PLAIN", "IPAddr": "127.0.0.1", "Port": plain.port},
        {
            "AETitle": "DEADSUB",
            "IPAddr": "127.0.0.1",
            "Port": silent.getsockname()[1],
            "mTLS": True,
        },
        {"AETitle": "TDD", "IPAddr": "127.0.0.1", "Port": free_port(), "mTLS": True},
    ]
    (workdir / "ApplicationEntities.json").write_text(json.dumps(entities))
    try:
        yield {
            "workdir": workdir,
            "watcher": watcher,
            "filtered": filtered,
            "stranger": stranger,
            "plain": plain,
        }
    finally:
        plain.stop()
        watcher.stop()
        filtered.stop()
        stranger.stop()
        silent.close()


@pytest.fixture(scope="module")
def ups_server(ups_env: dict[str, Any]) -> Iterator[TdwiiServer]:
    server = start_tdwii_server(
        ups_env["workdir"], "--ae-config", "ApplicationEntities.json", log_name="ups"
    )
    try:
        yield server
    finally:
        server.stop()


@contextmanager
def associate(server: TdwiiServer, ae_title: str = "TDD") -> Iterator[Any]:
    ae = AE(ae_title=ae_title)
    for uid in (UPS_PUSH, UPS_PULL, UPS_WATCH, UPS_QUERY):
        ae.add_requested_context(uid)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assoc = ae.associate(
        server.host, server.port, tls_args=(_client_context(server.workdir), "localhost")
    )
    assert assoc.is_established
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def create(assoc: Any, **kwargs: Any) -> str:
    ds = build_workitem(
        **{"patient_id": "PAT-1", "patient_name": "Doe^Jane", "label": "Fx 1", **kwargs}
    )
    uid = str(ds.SOPInstanceUID)
    del ds.SOPInstanceUID
    del ds.SOPClassUID
    status, _ = assoc.send_n_create(ds, UPS_PUSH, uid)
    assert status.Status == 0x0000, status
    return uid


def find(assoc: Any, **keys: Any) -> list[Dataset]:
    query = Dataset()
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    out = []
    for status, identifier in assoc.send_c_find(query, UPS_PULL):
        assert status is not None and "Status" in status, "no C-FIND response"
        if status.Status in (0xFF00, 0xFF01):
            out.append(identifier)
        else:
            assert status.Status == 0x0000, hex(status.Status)
    return out


def action(assoc: Any, uid: str, action_type: int, **info: Any) -> int:
    ds = Dataset()
    for keyword, value in info.items():
        setattr(ds, keyword, value)
    # pynetdicom sends nothing after the command for an empty data set: use None then
    status, _ = assoc.send_n_action(ds if info else None, action_type, UPS_PULL, uid)
    assert status is not None and "Status" in status
    return int(status.Status)


def n_set(assoc: Any, uid: str, ds: Dataset) -> int:
    status, _ = assoc.send_n_set(ds, UPS_PULL, uid)
    assert status is not None and "Status" in status
    return int(status.Status)


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def final_state(txn: str | None) -> Dataset:
    performed = Dataset()
    performed.PerformedProcedureStepStartDateTime = "20310514090000"
    performed.PerformedProcedureStepEndDateTime = "20310514091500"
    performed.PerformedStationNameCodeSequence = Sequence([code("TB1", "99IHERO2008", "TB1")])
    performed.PerformedWorkitemCodeSequence = Sequence(
        [code("121726", "DCM", "RT Treatment with Internal Verification")]
    )
    ds = Dataset()
    if txn is not None:
        ds.TransactionUID = txn
    ds.UnifiedProcedureStepPerformedProcedureSequence = Sequence([performed])
    return ds


def subscribe_global(server: TdwiiServer, receiving: str) -> int:
    with associate(server, "WATCHER") as assoc:
        return action(assoc, GLOBAL, 3, ReceivingAE=receiving, DeletionLock="FALSE")


# -- the tests (in order: they share the server) --------------------------------------------


def test_unknown_receiving_ae_is_c308(ups_server: TdwiiServer) -> None:
    assert subscribe_global(ups_server, "NOBODY") == 0xC308


def test_global_subscription_gets_scheduled_report(
    ups_server: TdwiiServer, ups_env: dict[str, Any]
) -> None:
    assert subscribe_global(ups_server, "WATCHER") == 0x0000
    with associate(ups_server) as assoc:
        uid = create(assoc, station="TB1", scheduled=DAY)
    info = ups_env["watcher"].wait_for(uid, 1, "SCHEDULED")
    assert info.ProcedureStepState == "SCHEDULED"
    # delivered over mutual TLS: the watcher saw the server's own node certificate
    cert = ups_env["watcher"].peer_certs[-1]
    subject = dict(x[0] for x in cert["subject"])
    assert "worklistmanager" in subject.get("commonName", "").lower()


def test_find_by_patient_and_state_and_by_machine_and_date(ups_server: TdwiiServer) -> None:
    with associate(ups_server) as assoc:
        mine = create(assoc, patient_id="PAT-FIND", station="TB7", scheduled=DAY)
        other_day = create(
            assoc, patient_id="PAT-FIND", station="TB7", scheduled=DAY + timedelta(days=3)
        )
        other_machine = create(assoc, patient_id="PAT-OTHER", station="TB8", scheduled=DAY)

        by_patient = find(
            assoc,
            PatientID="PAT-FIND",
            ProcedureStepState="SCHEDULED",
            PatientName="",
            TransactionUID="",
            SOPInstanceUID="",
        )
        assert sorted(d.SOPInstanceUID for d in by_patient) == sorted([mine, other_day])
        for ds in by_patient:
            assert ds.PatientName == "Doe^Jane"
            assert "TransactionUID" not in ds or not ds.TransactionUID

        assert [
            d.SOPInstanceUID for d in find(assoc, PatientID="PAT-F?ND", SOPInstanceUID=mine)
        ] == [mine]
        assert {d.SOPInstanceUID for d in find(assoc, PatientID="PAT-*", SOPInstanceUID="")} >= {
            mine,
            other_machine,
        }

        station = Dataset()
        station.CodeValue = "TB7"
        station.CodingSchemeDesignator = "99IHERO2008"
        day = DAY.strftime("%Y%m%d")
        by_machine = find(
            assoc,
            ProcedureStepState="SCHEDULED",
            ScheduledStationNameCodeSequence=Sequence([station]),
            ScheduledProcedureStepStartDateTime=f"{day}000000-{day}235959",
            SOPInstanceUID="",
        )
        assert [d.SOPInstanceUID for d in by_machine] == [mine]
        assert by_machine[0].ScheduledStationNameCodeSequence[0].CodeValue == "TB7"
        assert find(assoc, PatientID="NO-SUCH-PATIENT") == []


def test_claim_set_get_complete(ups_server: TdwiiServer, ups_env: dict[str, Any]) -> None:
    watcher = ups_env["watcher"]
    with associate(ups_server) as assoc:
        uid = create(assoc, station="TB1", scheduled=DAY)
        # cannot complete a SCHEDULED step, cannot claim without a Transaction UID
        assert (
            action(assoc, uid, 1, ProcedureStepState="COMPLETED", TransactionUID=generate_uid())
            == 0xC310
        )
        txn = generate_uid()
        assert action(assoc, uid, 1, ProcedureStepState="IN PROGRESS", TransactionUID=txn) == 0
        assert (
            action(assoc, uid, 1, ProcedureStepState="IN PROGRESS", TransactionUID=generate_uid())
            == 0xC302
        )
        watcher.wait_for(uid, 1, "IN PROGRESS")

        # the claim is in the database with the performer
        from tdwii_cli.ups.store import WorkitemStore

        with WorkitemStore(ups_server.db) as store:
            item = store.get(uid)
            assert item is not None
            assert item.state == "IN PROGRESS"
            assert item.transaction_uid == txn
            assert item.performer_ae == "TDD"

        comment = Dataset()
        comment.TransactionUID = generate_uid()
        comment.ProcedureStepLabel = "Fx 1 (re-labelled)"
        assert n_set(assoc, uid, comment) == 0xC301
        comment.TransactionUID = txn
        assert n_set(assoc, uid, comment) == 0x0000

        status, got = assoc.send_n_get([], UPS_PULL, uid)
        assert status.Status == 0
        assert got.ProcedureStepLabel == "Fx 1 (re-labelled)"
        assert got.ProcedureStepState == "IN PROGRESS"
        assert "TransactionUID" not in got
        status, got = assoc.send_n_get([0x00081195, 0x00741000], UPS_PULL, uid)
        assert status.Status == 0
        assert "TransactionUID" not in got and got.ProcedureStepState == "IN PROGRESS"
        status, _ = assoc.send_n_get([], UPS_PULL, generate_uid())
        assert status.Status == 0xC307

        # the Transaction UID is needed for completion too; then the final-state attributes
        assert (
            action(assoc, uid, 1, ProcedureStepState="COMPLETED", TransactionUID=generate_uid())
            == 0xC301
        )
        assert action(assoc, uid, 1, ProcedureStepState="COMPLETED", TransactionUID=txn) == 0xC304
        assert n_set(assoc, uid, final_state(txn)) == 0x0000
        assert action(assoc, uid, 1, ProcedureStepState="COMPLETED", TransactionUID=txn) == 0
        watcher.wait_for(uid, 1, "COMPLETED")

        assert n_set(assoc, uid, final_state(txn)) == 0xC300
        assert action(assoc, uid, 1, ProcedureStepState="COMPLETED", TransactionUID=txn) == 0xB306
        assert action(assoc, uid, 2) == 0xC311
        # final workitems stay queryable
        assert [
            d.ProcedureStepState for d in find(assoc, SOPInstanceUID=uid, ProcedureStepState="")
        ] == ["COMPLETED"]


def test_concurrent_claims_one_wins(ups_server: TdwiiServer) -> None:
    """Two delivery devices claim the same workitems at the same moment: one gets it,
    the other C302, and the database names the winner's Transaction UID."""
    from tdwii_cli.ups.store import WorkitemStore

    with associate(ups_server) as assoc:
        uids = [create(assoc, station="TB6", scheduled=DAY) for _ in range(5)]
    results: dict[str, list[tuple[int, str]]] = {uid: [] for uid in uids}
    barrier = threading.Barrier(2)

    def claim(ae_title: str) -> None:
        with associate(ups_server, ae_title) as mine:
            for uid in uids:
                txn = generate_uid()
                barrier.wait(10)
                status = action(mine, uid, 1, ProcedureStepState="IN PROGRESS", TransactionUID=txn)
                results[uid].append((status, txn))

    threads = [threading.Thread(target=claim, args=(ae,)) for ae in ("TDD", "TDD2")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    with WorkitemStore(ups_server.db) as store:
        for uid, outcome in results.items():
            assert sorted(status for status, _ in outcome) == [0x0000, 0xC302], outcome
            winner = next(txn for status, txn in outcome if status == 0)
            item = store.get(uid)
            assert item is not None and item.transaction_uid == winner


def test_cancel_scheduled_and_request_cancel_in_progress(
    ups_server: TdwiiServer, ups_env: dict[str, Any]
) -> None:
    watcher = ups_env["watcher"]
    with associate(ups_server) as assoc:
        scheduled = create(assoc, station="TB1", scheduled=DAY)
        assert action(assoc, scheduled, 2, ReasonForCancellation="patient ill") == 0
        watcher.wait_for(scheduled, 1, "CANCELED")
        assert action(assoc, scheduled, 2) == 0xB304
        status, got = assoc.send_n_get([0x00741000], UPS_PULL, scheduled)
        assert status.Status == 0, "N-GET of one attribute (a single tag, not a list)"
        assert got.ProcedureStepState == "CANCELED"

        running = create(assoc, station="TB1", scheduled=DAY)
        txn = generate_uid()
        assert action(assoc, running, 1, ProcedureStepState="IN PROGRESS", TransactionUID=txn) == 0
    with associate(ups_server, "OIS") as other:
        assert action(other, running, 2, ReasonForCancellation="machine down") == 0
    info = watcher.wait_for(running, 2)
    assert info.get("RequestingAE") == "OIS"
    with associate(ups_server) as assoc:
        assert action(assoc, running, 1, ProcedureStepState="CANCELED", TransactionUID=txn) == 0
    watcher.wait_for(running, 1, "CANCELED")


def test_filtered_global_and_unsubscribe(ups_server: TdwiiServer, ups_env: dict[str, Any]) -> None:
    filtered, watcher = ups_env["filtered"], ups_env["watcher"]
    with associate(ups_server, "FILTERED") as assoc:
        keys = Dataset()
        keys.ReceivingAE = "FILTERED"
        keys.DeletionLock = "FALSE"
        keys.ScheduledStationNameCodeSequence = Sequence([code("TB9", "99IHERO2008", "TB9")])
        status, _ = assoc.send_n_action(keys, 3, UPS_WATCH, FILTERED_GLOBAL)
        assert status.Status == 0x0000
        elsewhere = create(assoc, station="TB1", scheduled=DAY)
        here = create(assoc, station="TB9", scheduled=DAY)
        filtered.wait_for(here, 1, "SCHEDULED")
        watcher.wait_for(elsewhere, 1, "SCHEDULED")  # delivered to the global subscriber
        # the filtered subscriber had its chance: the reports go out in order per AE
        time.sleep(0.3)
        assert not [r for r in filtered.reports if r[1] == elsewhere]

        # unsubscribed from one workitem: no more reports for it, others still come
        assert action(assoc, here, 4, ReceivingAE="FILTERED") == 0
        assert (
            action(assoc, here, 1, ProcedureStepState="IN PROGRESS", TransactionUID=generate_uid())
            == 0
        )
        other = create(assoc, station="TB9", scheduled=DAY)
        filtered.wait_for(other, 1, "SCHEDULED")
        watcher.wait_for(here, 1, "IN PROGRESS")
        time.sleep(0.3)
        assert not [
            r
            for r in filtered.reports
            if r[1] == here and r[0] == 1 and r[2].ProcedureStepState == "IN PROGRESS"
        ]


def test_dead_subscriber_does_not_slow_answers(
    ups_server: TdwiiServer, ups_env: dict[str, Any]
) -> None:
    assert subscribe_global(ups_server, "DEADSUB") == 0
    with associate(ups_server) as assoc:
        started = time.monotonic()
        uids = [create(assoc, station="TB2", scheduled=DAY) for _ in range(5)]
        for uid in uids:
            assert (
                action(
                    assoc, uid, 1, ProcedureStepState="IN PROGRESS", TransactionUID=generate_uid()
                )
                == 0
            )
        elapsed = time.monotonic() - started
    # 10 operations, each of which queued reports for a subscriber that never answers
    assert elapsed < 2.0, f"{elapsed:.2f} s for 10 operations with a dead subscriber"
    for uid in uids:  # the live watcher still gets its reports
        ups_env["watcher"].wait_for(uid, 1, "IN PROGRESS")
    ups_server.wait_log("DEADSUB", timeout=10)


def test_subscriber_with_a_foreign_certificate_gets_nothing(
    ups_server: TdwiiServer, ups_env: dict[str, Any]
) -> None:
    """The server checks the subscriber's certificate against its own CA: no report leaks
    to a peer from another PKI; the failure is logged and retried in the background."""
    start = len(ups_server.log_text())
    assert subscribe_global(ups_server, "WRONGCA") == 0
    with associate(ups_server) as assoc:
        began = time.monotonic()
        uid = create(assoc, station="TB5", scheduled=DAY)
        assert time.monotonic() - began < 1.0
    ups_env["watcher"].wait_for(uid, 1, "SCHEDULED")
    text = ups_server.wait_log("retrying event reports to WRONGCA", start=start, timeout=10)
    assert "event reports to WRONGCA" in text and "not delivered" in text
    assert "certificate" in text.lower()
    assert ups_env["stranger"].reports == []


def test_subscriber_without_mtls_in_the_ae_configuration_gets_plain_dicom(
    ups_server: TdwiiServer, ups_env: dict[str, Any]
) -> None:
    assert subscribe_global(ups_server, "PLAIN") == 0
    with associate(ups_server) as assoc:
        uid = create(assoc, station="TB5", scheduled=DAY)
    ups_env["plain"].wait_for(uid, 1, "SCHEDULED")
    assert ups_env["plain"].peer_certs[-1] is None  # not TLS


def test_retention_purges_final_workitems_without_deletion_lock(ups_env: dict[str, Any]) -> None:
    """`--retention 1s`: a CANCELED workitem goes, one with a Deletion Lock stays."""
    server = start_tdwii_server(
        ups_env["workdir"],
        "--ae-config",
        "ApplicationEntities.json",
        "--retention",
        "1s",
        db=ups_env["workdir"] / "retention.sqlite",
        log_name="ups-retention",
    )
    try:
        with associate(server) as assoc:
            locked = create(assoc, station="TB4", scheduled=DAY)
            unlocked = create(assoc, station="TB4", scheduled=DAY)
            running = create(assoc, station="TB4", scheduled=DAY)
            assert action(assoc, locked, 3, ReceivingAE="WATCHER", DeletionLock="TRUE") == 0
            assert action(assoc, locked, 2) == 0
            assert action(assoc, unlocked, 2) == 0
            txn = generate_uid()
            assert (
                action(assoc, running, 1, ProcedureStepState="IN PROGRESS", TransactionUID=txn) == 0
            )
            deadline = time.monotonic() + 8
            while assoc.send_n_get([0x00741000], UPS_PULL, unlocked)[0].Status != 0xC307:
                assert time.monotonic() < deadline, "the unlocked CANCELED workitem was not purged"
                time.sleep(0.2)
            assert find(assoc, SOPInstanceUID=unlocked) == []
            status, got = assoc.send_n_get([0x00741000], UPS_PULL, locked)
            assert status.Status == 0 and got.ProcedureStepState == "CANCELED"
            status, got = assoc.send_n_get([0x00741000], UPS_PULL, running)
            assert status.Status == 0 and got.ProcedureStepState == "IN PROGRESS"
            # the lock goes with the subscription: then the workitem may go too
            assert action(assoc, locked, 4, ReceivingAE="WATCHER") == 0
            deadline = time.monotonic() + 8
            while assoc.send_n_get([0x00741000], UPS_PULL, locked)[0].Status != 0xC307:
                assert time.monotonic() < deadline, "unlocked workitem was not purged"
                time.sleep(0.2)
    finally:
        server.stop()


def test_subscriptions_survive_restart(ups_env: dict[str, Any], ups_server: TdwiiServer) -> None:
    ups_server.stop()
    again = start_tdwii_server(
        ups_env["workdir"],
        "--ae-config",
        "ApplicationEntities.json",
        db=ups_server.db,
        log_name="ups-again",
    )
    try:
        with associate(again) as assoc:
            uid = create(assoc, station="TB3", scheduled=DAY)
        ups_env["watcher"].wait_for(uid, 1, "SCHEDULED")
    finally:
        again.stop()
