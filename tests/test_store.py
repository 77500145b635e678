"""The SQLite workitem store: schema, round trips, duplicates, indexes, transactions, WAL."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from tdwii_cli.dicom.values import normalise_dt
from tdwii_cli.server import store as store_module
from tdwii_cli.server.store import (
    DuplicateWorkitem,
    NoSuchWorkitem,
    StoreError,
    WorkitemStore,
)
from tdwii_cli.ups.workitem import build_workitem


def item(**kw: str) -> Dataset:
    return build_workitem(
        patient_id=kw.pop("patient_id", "P1"),
        patient_name="Doe^Jane",
        label=kw.pop("label", "Fx 1"),
        station=kw.pop("station", "TrueBeam1"),
        worklist_label=kw.pop("worklist_label", "TB1 morning"),
    )


def test_schema_and_pragmas(tmp_path: Path) -> None:
    db = tmp_path / "w.sqlite"
    with WorkitemStore(db) as store:
        assert store.schema_version == len(store_module.MIGRATIONS)
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert store.conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        indexes = {r[1] for r in store.conn.execute("PRAGMA index_list(workitems)")}
    for column in ("state", "scheduled_start", "patient_id", "station_code", "worklist_label"):
        assert f"workitems_{column}" in indexes


def test_round_trip_and_columns(tmp_path: Path) -> None:
    ds = item()
    ds.TransactionUID = ""
    with WorkitemStore(tmp_path / "w.sqlite") as store:
        store.create(ds, transaction_uid=None)
        got = store.get(ds.SOPInstanceUID)
        assert got is not None
        assert got.state == "SCHEDULED" and got.transaction_uid is None
        assert "TransactionUID" not in got.dataset
        assert got.dataset.PatientID == "P1"
        assert got.dataset.ProcedureStepLabel == "Fx 1"
        row = store.conn.execute(
            "SELECT scheduled_start, patient_id, patient_name, worklist_label, input_readiness,"
            " priority, station_code, workitem_code FROM workitems"
        ).fetchone()
        assert store.get("1.2.3.999") is None
    assert row[0] == normalise_dt(ds.ScheduledProcedureStepStartDateTime)
    assert row[1:6] == ("P1", "Doe^Jane", "TB1 morning", "READY", "MEDIUM")
    assert row[6].startswith("TrueBeam1^")
    assert row[7] == "121726^DCM"


def test_duplicate_survives_reopen(tmp_path: Path) -> None:
    ds = item()
    with WorkitemStore(tmp_path / "w.sqlite") as store:
        store.create(ds)
        with pytest.raises(DuplicateWorkitem):
            store.create(ds)
    with WorkitemStore(tmp_path / "w.sqlite") as again:
        with pytest.raises(DuplicateWorkitem):
            again.create(ds)
        assert again.count() == 1


def test_update_transaction_uid_and_state(tmp_path: Path) -> None:
    ds = item()
    with WorkitemStore(tmp_path / "w.sqlite") as store:
        store.create(ds)
        ds.ProcedureStepState = "IN PROGRESS"
        ds.TransactionUID = "1.2.3.4"
        store.update(ds.SOPInstanceUID, ds, transaction_uid="1.2.3.4", performer_ae="TDD")
        got = store.get(ds.SOPInstanceUID)
        assert got is not None
        assert (got.state, got.transaction_uid, got.performer_ae) == (
            "IN PROGRESS",
            "1.2.3.4",
            "TDD",
        )
        assert "TransactionUID" not in got.dataset
        store.update(ds.SOPInstanceUID, ds, state="COMPLETED")  # keeps the Transaction UID
        got = store.get(ds.SOPInstanceUID)
        assert got is not None and (got.state, got.transaction_uid) == ("COMPLETED", "1.2.3.4")
        with pytest.raises(NoSuchWorkitem):
            store.update("1.2.3.999", ds)


def test_transaction_rolls_back(tmp_path: Path) -> None:
    with WorkitemStore(tmp_path / "w.sqlite") as store:
        first, second = item(), item()
        with pytest.raises(RuntimeError), store.transaction():
            store.create(first)
            store.create(second)
            raise RuntimeError("check failed")
        assert store.count() == 0
        with store.transaction():
            store.create(first)
            # inside the transaction select() sees the uncommitted row
            assert [w.uid for w in store.select("uid = ?", (first.SOPInstanceUID,))] == [
                first.SOPInstanceUID
            ]
        assert store.count() == 1


def test_select_streams_and_does_not_block_writers(tmp_path: Path) -> None:
    with WorkitemStore(tmp_path / "w.sqlite") as store:
        for i in range(150):
            store.create(item(patient_id=f"P{i % 3}"))
        rows = store.select("patient_id = ?", ("P1",))
        first = next(rows)
        assert first.dataset.PatientID == "P1"
        # A writer in another thread commits while the read is open.
        done = threading.Event()
        threading.Thread(target=lambda: (store.create(item()), done.set())).start()
        assert done.wait(5)
        rest = list(rows)
        assert len(rest) == 49  # the snapshot: 50 rows for P1
        assert store.count() == 151
        ordered = [w.uid for w in store.select()]
        assert len(ordered) == 151


def test_normalise_dt() -> None:
    assert normalise_dt("20250311143000") == "20250311143000.000000"
    assert normalise_dt("2025031114") == "20250311140000.000000"
    assert normalise_dt("20250311143000.5+0100") == "20250311143000.500000"
    assert normalise_dt("2025") == "20250101000000.000000"
    assert normalise_dt("") == "" and normalise_dt(None) == "" and normalise_dt("x") == ""
    assert normalise_dt("2025031109") < normalise_dt("20250311100000")


def test_bad_paths_are_store_errors(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("not a folder\n")
    with pytest.raises(StoreError, match="cannot create database"):
        WorkitemStore(tmp_path / "a-file" / "w.sqlite")
    made = WorkitemStore(tmp_path / "missing" / "deeper" / "w.sqlite")  # folders made, 0700
    made.close()
    assert (tmp_path / "missing").stat().st_mode & 0o777 == 0o700
    with pytest.raises(StoreError, match="directory"):
        WorkitemStore(tmp_path)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StoreError):
        WorkitemStore(junk)


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "w.sqlite"
    WorkitemStore(db).close()
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="newer"):
        WorkitemStore(db)


def test_appended_migration_is_applied_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "w.sqlite"
    with WorkitemStore(db) as store:
        store.create(item())
    extra = "CREATE TABLE extra_things (name TEXT PRIMARY KEY)"
    monkeypatch.setattr(store_module, "MIGRATIONS", [*store_module.MIGRATIONS, extra])
    for _ in range(2):
        with WorkitemStore(db) as store:
            assert store.schema_version == len(store_module.MIGRATIONS)
            assert store.count() == 1
            tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
            assert "extra_things" in tables
