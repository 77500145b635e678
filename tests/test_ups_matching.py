"""UPS C-FIND matching, the state machine and subscriptions, against a real SQLite store."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tdwii_cli.server.config import parse_retention
from tdwii_cli.server.store import WorkitemStore
from tdwii_cli.server.subscriptions import FILTERED_GLOBAL, GLOBAL, Subscriptions
from tdwii_cli.server.ups_scp import UpsScp
from tdwii_cli.ups import states
from tdwii_cli.ups.matching import Query, QueryError, dt_bounds, matches, response_identifier
from tdwii_cli.ups.workitem import build_workitem

DAY = datetime(2024, 5, 6, 8, 0, 0)


def item(n: int, *, station: str = "TB1", patient: str = "PAT-1", hours: int = 0) -> Dataset:
    return build_workitem(
        patient_id=patient,
        patient_name=f"Doe^Jane{n}",
        label=f"Fx {n}",
        station=station,
        scheduled=DAY + timedelta(hours=hours),
        worklist_label="RT",
    )


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    with WorkitemStore(tmp_path / "w.sqlite") as s:
        yield s


def find(store: WorkitemStore, identifier: Dataset) -> list[Dataset]:
    query = Query.from_identifier(identifier)
    return [
        query.response(w.dataset)
        for w in store.select(query.where, query.params)
        if query.post_filter(w.dataset)
    ]


def ident(**keys: object) -> Dataset:
    ds = Dataset()
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


def code_seq(value: str = "", scheme: str = "") -> Sequence:
    it = Dataset()
    it.CodeValue = value
    it.CodingSchemeDesignator = scheme
    return Sequence([it])


def fill(store: WorkitemStore) -> list[Dataset]:
    items = [
        item(0, station="TB1", patient="PAT-1", hours=0),
        item(1, station="TB1", patient="PAT-2", hours=24),
        item(2, station="TB2", patient="PAT-1", hours=2),
        item(3, station="TB2", patient="OTHER", hours=48),
    ]
    for ds in items:
        store.create(ds)
    return items


def test_single_value_wildcards_and_universal(store: WorkitemStore) -> None:
    items = fill(store)
    assert {d.PatientID for d in find(store, ident(PatientID="PAT-1"))} == {"PAT-1"}
    assert len(find(store, ident(PatientID="PAT-1"))) == 2
    assert len(find(store, ident(PatientID="PAT-?"))) == 3
    assert len(find(store, ident(PatientID="*"))) == 4
    assert len(find(store, ident(PatientName="Doe^Jane[1*"))) == 0  # '[' is literal
    assert len(find(store, ident(PatientName="Doe^Jane1"))) == 1
    got = find(store, ident(PatientID="", ProcedureStepState="SCHEDULED"))
    assert len(got) == 4 and all("PatientID" in d for d in got)
    uids = f"{items[0].SOPInstanceUID}\\{items[3].SOPInstanceUID}"
    assert {d.SOPInstanceUID for d in find(store, ident(SOPInstanceUID=uids))} == {
        items[0].SOPInstanceUID,
        items[3].SOPInstanceUID,
    }


def test_date_ranges(store: WorkitemStore) -> None:
    fill(store)
    assert len(find(store, ident(ScheduledProcedureStepStartDateTime="20240506"))) == 2
    assert len(find(store, ident(ScheduledProcedureStepStartDateTime="20240507-"))) == 2
    assert len(find(store, ident(ScheduledProcedureStepStartDateTime="-20240506093000"))) == 1
    span = "20240506090000-20240507080000"
    assert len(find(store, ident(ScheduledProcedureStepStartDateTime=span))) == 2
    assert dt_bounds("DA", "20240101-20240131") == ("20240101", "20240131")
    with pytest.raises(QueryError):
        Query.from_identifier(ident(ScheduledProcedureStepStartDateTime="yesterday"))


def test_sequence_matching_on_station_and_workitem_codes(store: WorkitemStore) -> None:
    fill(store)
    q = ident(ScheduledStationNameCodeSequence=code_seq("TB2"))
    assert len(find(store, q)) == 2
    q = ident(ScheduledStationNameCodeSequence=code_seq("TB*"))
    scheme = item(0).ScheduledStationNameCodeSequence[0].CodingSchemeDesignator
    q.ScheduledStationNameCodeSequence[0].CodingSchemeDesignator = scheme
    assert len(find(store, q)) == 4
    q.ScheduledStationNameCodeSequence[0].CodingSchemeDesignator = "NOPE"
    assert find(store, q) == []
    code = item(0).ScheduledWorkitemCodeSequence[0]
    q = ident(ScheduledWorkitemCodeSequence=code_seq(code.CodeValue, code.CodingSchemeDesignator))
    assert len(find(store, q)) == 4
    # a typical delivery-device query: state, machine, day
    q = ident(
        ProcedureStepState="SCHEDULED",
        ScheduledStationNameCodeSequence=code_seq("TB1"),
        ScheduledProcedureStepStartDateTime="20240506",
    )
    query = Query.from_identifier(q)
    assert "station_code" in query.where and "scheduled_start" in query.where
    assert len(find(store, q)) == 1


def test_non_indexed_keys_filtered_in_python(store: WorkitemStore) -> None:
    fill(store)
    q = ident(ProcedureStepLabel="Fx 2")
    assert Query.from_identifier(q).where == "1"
    got = find(store, q)
    assert [d.ProcedureStepLabel for d in got] == ["Fx 2"]
    assert len(find(store, ident(ProcedureStepLabel="Fx *"))) == 4


def test_response_has_requested_keys_empty_when_absent_never_transaction_uid() -> None:
    ds = item(0)
    ds.TransactionUID = "1.2.3"
    q = ident(PatientID="", TransactionUID="", AdmittingDiagnosesDescription="")
    q.ScheduledStationNameCodeSequence = code_seq()
    out = response_identifier(q, ds)
    assert "TransactionUID" not in out
    assert out.PatientID == "PAT-1"
    assert "AdmittingDiagnosesDescription" in out and not out.AdmittingDiagnosesDescription
    assert out.ScheduledStationNameCodeSequence[0].CodeValue == "TB1"
    assert out.SOPInstanceUID == ds.SOPInstanceUID
    assert "PatientName" not in out


def test_matches_in_python_agrees_with_sql(store: WorkitemStore) -> None:
    items = fill(store)
    q = ident(PatientID="PAT-1", ScheduledStationNameCodeSequence=code_seq("TB2"))
    sql = {d.SOPInstanceUID for d in find(store, q)}
    python = {d.SOPInstanceUID for d in items if matches(q, d)}
    assert sql == python == {items[2].SOPInstanceUID}


# -- state machine --------------------------------------------------------------------------


def performed(ds: Dataset) -> None:
    it = Dataset()
    it.PerformedProcedureStepStartDateTime = "20240506080000"
    it.PerformedProcedureStepEndDateTime = "20240506081500"
    it.PerformedStationNameCodeSequence = code_seq("TB1", "99X")
    it.PerformedWorkitemCodeSequence = code_seq("121726", "DCM")
    ds.UnifiedProcedureStepPerformedProcedureSequence = Sequence([it])


@pytest.mark.parametrize(
    ("current", "requested", "txn", "expected"),
    [
        ("SCHEDULED", "IN PROGRESS", "1.1", 0x0000),
        ("SCHEDULED", "IN PROGRESS", "", 0xC301),
        ("SCHEDULED", "COMPLETED", "1.1", 0xC310),
        ("SCHEDULED", "CANCELED", "1.1", 0xC310),
        ("SCHEDULED", "SCHEDULED", "", 0xC303),
        ("IN PROGRESS", "IN PROGRESS", "1.2", 0xC302),
        ("IN PROGRESS", "COMPLETED", "9.9", 0xC301),
        ("IN PROGRESS", "COMPLETED", "1.1", 0xC304),
        ("IN PROGRESS", "CANCELED", "1.1", 0x0000),
        ("COMPLETED", "COMPLETED", "1.1", 0xB306),
        ("COMPLETED", "CANCELED", "1.1", 0xC300),
        ("CANCELED", "CANCELED", "1.1", 0xB304),
        ("CANCELED", "IN PROGRESS", "1.1", 0xC300),
    ],
)
def test_change_state_table(current: str, requested: str, txn: str, expected: int) -> None:
    assert states.change_state(current, "1.1", requested, txn, item(0)).status == expected


def test_completed_needs_final_state_attributes() -> None:
    ds = item(0)
    assert states.final_state_problems(ds)
    performed(ds)
    assert states.final_state_problems(ds) == []
    assert states.change_state("IN PROGRESS", "1.1", "COMPLETED", "1.1", ds).status == 0
    del ds.UnifiedProcedureStepPerformedProcedureSequence[0].PerformedWorkitemCodeSequence
    assert "Workitem" in states.final_state_problems(ds)[0]


def test_nset_rules_and_whole_sequence_replacement() -> None:
    mod = ident(TransactionUID="1.1", ProcedureStepLabel="new")
    assert states.check_nset("IN PROGRESS", "1.1", mod).status == 0
    assert states.check_nset("IN PROGRESS", "1.1", ident(TransactionUID="2.2")).status == 0xC301
    assert states.check_nset("COMPLETED", "1.1", mod).status == 0xC300
    assert states.check_nset("SCHEDULED", None, mod).status == 0xC310
    assert states.check_nset("SCHEDULED", None, ident(ProcedureStepLabel="x")).status == 0
    bad = ident(TransactionUID="1.1", ProcedureStepState="COMPLETED")
    assert states.check_nset("IN PROGRESS", "1.1", bad).status == 0x0106
    ds = item(0)
    ds.ScheduledStationNameCodeSequence = Sequence(list(code_seq("A")) + list(code_seq("B")))
    mod = ident(ScheduledStationNameCodeSequence=code_seq("C"), TransactionUID="1.9")
    states.apply_nset(ds, mod)
    assert [i.CodeValue for i in ds.ScheduledStationNameCodeSequence] == ["C"]
    assert "TransactionUID" not in ds


def test_request_cancel_and_cancel_records_reason() -> None:
    assert states.request_cancel("SCHEDULED").action == "cancel"
    assert states.request_cancel("IN PROGRESS").action == "notify"
    assert states.request_cancel("CANCELED").status == 0xB304
    assert states.request_cancel("COMPLETED").status == 0xC311
    ds = item(0)
    states.cancel(ds, states.cancellation_info(ident(ReasonForCancellation="patient ill")))
    progress = ds.ProcedureStepProgressInformationSequence[0]
    assert ds.ProcedureStepState == "CANCELED"
    assert progress.ReasonForCancellation == "patient ill"
    assert progress.ProcedureStepCancellationDateTime
    assert states.state_report(ds).ReasonForCancellation == "patient ill"


# -- subscriptions and retention ------------------------------------------------------------


def test_subscriptions_global_filtered_instance_suspend(store: WorkitemStore) -> None:
    items = fill(store)
    subs = Subscriptions(store)
    added = subs.subscribe_global("WATCH", deletion_lock=True)
    assert len(added) == 4
    keys = ident(ScheduledStationNameCodeSequence=code_seq("TB2"))
    assert len(subs.subscribe_global("TB2VIEW", False, keys)) == 2
    new_tb1, new_tb2 = item(9, station="TB1"), item(10, station="TB2")
    store.create(new_tb1)
    assert subs.on_created(new_tb1) == ["WATCH"]
    store.create(new_tb2)
    assert subs.on_created(new_tb2) == ["TB2VIEW", "WATCH"]
    assert subs.is_locked(new_tb1.SOPInstanceUID)
    subs.suspend("WATCH")
    late = item(11)
    store.create(late)
    assert subs.on_created(late) == []
    assert subs.subscribers(items[0].SOPInstanceUID) == ["WATCH"]  # kept after suspend
    subs.unsubscribe("WATCH", items[0].SOPInstanceUID)
    assert subs.subscribers(items[0].SOPInstanceUID) == []
    assert subs.global_subscribers() == ["TB2VIEW", "WATCH"]
    subs.unsubscribe("WATCH", GLOBAL)
    assert "WATCH" not in {s.ae_title for s in subs.all()}
    assert {s.target for s in subs.all() if s.is_global} == {FILTERED_GLOBAL}


def test_retention_purges_unlocked_final_workitems_only(tmp_path: Path) -> None:
    db = tmp_path / "r.sqlite"
    with WorkitemStore(db) as store:
        a, b, c = item(0), item(1), item(2)
        for ds in (a, b, c):
            store.create(ds)
        service = UpsScp(store, retention=0.0)
        Subscriptions(store).subscribe_instance("KEEPER", b.SOPInstanceUID, deletion_lock=True)
        for ds in (a, b):
            states.cancel(ds)
            store.update(ds.SOPInstanceUID, ds)
        purged = service.purge_once()
        service.stop()
        assert purged == [a.SOPInstanceUID]
        assert store.get(a.SOPInstanceUID) is None
        assert store.get(b.SOPInstanceUID) is not None  # deletion lock
        assert store.get(c.SOPInstanceUID) is not None  # not final
    assert parse_retention("30d") == 30 * 86400
    assert parse_retention("90s") == 90 and parse_retention("keep") is None
    with pytest.raises(ValueError):
        parse_retention("soon")
