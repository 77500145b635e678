"""Undelivered N-EVENT-REPORTs are journaled in the store and survive a restart.

Real pieces only: a SQLite store on disk, the `EventSender` threads, a subscriber
that is a real pynetdicom UPS Event SCP on a loopback port (absent at first; the
`EventReceiver` of tests/peers.py), and `tdwii serve` itself stopped and started again.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from conftest import free_port, start_tdwii_server, wait_until
from peers import EventReceiver, scu_association
from tdwii_cli.server.config import KnownAE
from tdwii_cli.server.eventjournal import EventJournal
from tdwii_cli.server.events import EventSender
from tdwii_cli.server.store import WorkitemStore
from tdwii_cli.ups.workitem import build_workitem

UPS_WATCH = "1.2.840.10008.5.1.4.34.6.2"
UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
GLOBAL = "1.2.840.10008.5.1.4.34.5"


def subscriber(port: int) -> EventReceiver:
    """WATCHER: a plain-DICOM UPS Event SCP on 127.0.0.1:`port`, recording every report."""
    return EventReceiver("WATCHER", port=port)


def _reports(receiver: EventReceiver) -> list[tuple[int, str, str]]:
    """(event type, UID, state) of each report received so far, in order."""
    return [(r.event_type, r.uid, r.state) for r in receiver.seen()]


def _info(state: str) -> Dataset:
    ds = Dataset()
    ds.ProcedureStepState = state
    return ds


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def test_reports_to_an_absent_subscriber_are_kept_and_sent_after_a_restart(
    tmp_path: Path,
) -> None:
    port = free_port()
    assert _refused(port)
    known = {"WATCHER": KnownAE("WATCHER", "127.0.0.1", port)}
    with WorkitemStore(tmp_path / "ups.sqlite") as store:
        first = EventSender("UPSSCP", known, journal=EventJournal(store), retry_base=0.05)
        for uid, state in (
            ("1.2.3.1", "SCHEDULED"),
            ("1.2.3.1", "IN PROGRESS"),
            ("1.2.3.2", "SCHEDULED"),
        ):
            first.submit("WATCHER", 1, uid, _info(state))
        time.sleep(0.3)  # a few failed attempts: nobody listens
        first.stop(timeout=0.2)
        assert EventJournal(store).count() == 3

    # "Restart": a new store connection and sender; the subscriber is up now.
    receiver = subscriber(port)
    try:
        with WorkitemStore(tmp_path / "ups.sqlite") as store:
            journal = EventJournal(store)
            second = EventSender("UPSSCP", known, journal=journal, retry_base=0.05)
            assert second.restore() == 3
            wait_until(lambda: len(receiver.seen()) >= 3, 20, "3 reports at WATCHER")
            assert _reports(receiver) == [
                (1, "1.2.3.1", "SCHEDULED"),
                (1, "1.2.3.1", "IN PROGRESS"),
                (1, "1.2.3.2", "SCHEDULED"),
            ]  # all of them, in the order they were queued
            assert second.wait_idle(5)
            assert journal.count() == 0  # answered: forgotten
            second.stop()
    finally:
        receiver.stop()


def test_reports_given_up_are_removed_from_the_journal(tmp_path: Path) -> None:
    with WorkitemStore(tmp_path / "ups.sqlite") as store:
        journal = EventJournal(store)
        sender = EventSender(
            "UPSSCP",
            {"GONE": KnownAE("GONE", "127.0.0.1", free_port())},
            journal=journal,
            retry_base=0.01,
            retry_max=0.01,
            max_attempts=2,
        )
        sender.submit("GONE", 1, "1.2.3.9", _info("SCHEDULED"))
        sender.submit("NOBODY", 1, "1.2.3.9", _info("SCHEDULED"))  # not in the AE configuration
        wait_until(lambda: journal.count() == 0, 10, "the journal to forget both reports")
        assert journal.count() == 0
        sender.stop(timeout=0.1)


@pytest.fixture
def serve_dir(pki_dir: Path, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A serve folder whose AE configuration names WATCHER on a port nobody listens on yet."""
    (tmp_path / "certs").symlink_to(pki_dir, target_is_directory=True)
    port = free_port()
    (tmp_path / "ae.json").write_text(
        json.dumps([{"AETitle": "WATCHER", "IPAddr": "127.0.0.1", "Port": port, "mTLS": False}])
    )
    yield tmp_path, port


def test_serve_restart_delivers_what_the_subscriber_missed(
    serve_dir: tuple[Path, int],
) -> None:
    workdir, watcher_port = serve_dir
    server = start_tdwii_server(workdir, "--ae-config", "ae.json")
    try:
        contexts = (UPS_PUSH, UPS_WATCH)
        with scu_association(server, *contexts, ae_title="WATCHER", called_aet="UPSSCP") as assoc:
            assert assoc.is_established
            action = Dataset()
            action.ReceivingAE = "WATCHER"
            action.DeletionLock = "FALSE"
            status, _ = assoc.send_n_action(action, 3, UPS_WATCH, GLOBAL)
            assert status.Status == 0x0000
            ds = build_workitem(patient_id="J-1", patient_name="Doe^J", label="Fx 1", station="TB1")
            status, _ = assoc.send_n_create(ds, UPS_PUSH, ds.SOPInstanceUID)
            assert status.Status == 0x0000
        server.wait_log("event reports to WATCHER")  # the first delivery attempt failed
    finally:
        assert server.stop() == 0

    receiver = subscriber(watcher_port)
    again = start_tdwii_server(workdir, "--ae-config", "ae.json", log_name="again")
    try:
        # the State Report (type 1) of the workitem, SCHEDULED, arrives (or this fails)
        receiver.state_report(str(ds.SOPInstanceUID), "SCHEDULED", timeout=20)
        again.wait_log("queued again")
    finally:
        again.stop()
        receiver.stop()


def test_unsubscribing_drops_the_reports_still_queued(tmp_path: Path) -> None:
    with WorkitemStore(tmp_path / "ups.sqlite") as store:
        journal = EventJournal(store)
        sender = EventSender(
            "UPSSCP",
            {"WATCHER": KnownAE("WATCHER", "127.0.0.1", free_port())},  # nobody listens
            journal=journal,
            retry_base=30,  # after the first failed try it waits, holding the queue
        )
        for uid in ("1.2.3.1", "1.2.3.2", "1.2.3.1"):
            sender.submit("WATCHER", 1, uid, _info("SCHEDULED"))
        wait_until(
            lambda: sender._worker("WATCHER").failures, 5, "the first failed delivery to WATCHER"
        )
        assert sender.discard("WATCHER", "1.2.3.1") == 2  # unsubscribed from one workitem
        assert [r.uid for r in sender._worker("WATCHER").queue] == ["1.2.3.2"]
        assert journal.count() == 1
        assert sender.discard("WATCHER") == 1  # from everything (the global instance)
        assert sender.pending() == 0 and journal.count() == 0
        sender.stop(timeout=0.1)
