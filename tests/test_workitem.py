"""The TDW-II workitem builder, the Part 10 writer and the samples in ups_instances/."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pydicom
import pytest

from tdwii_cli.client.dicomfiles import NotDicomError, load_datasets, read_dataset, write_part10
from tdwii_cli.dicom.uids import RT_PLAN_STORAGE
from tdwii_cli.dicom.uids import UPS_PUSH as UPS_PUSH_SOP_CLASS
from tdwii_cli.ups.ncreate import check_ncreate, missing_type2
from tdwii_cli.ups.workitem import build_workitem, parse_code

ROOT = Path(__file__).resolve().parent.parent


def test_build_workitem_content() -> None:
    when = datetime(2025, 3, 10, 8, 0)
    ds = build_workitem(
        patient_id="TDW-1",
        patient_name="Moreau^Claire",
        label="Breast L Fx 3",
        worklist_label="TrueBeam1",
        scheduled=when,
        priority="HIGH",
        station="TrueBeam1",
        plan_uid="1.2.826.0.1.3680043.8.498.1",
        fraction=3,
        fractions_planned=15,
    )
    assert ds.SOPClassUID == UPS_PUSH_SOP_CLASS
    assert ds.ProcedureStepState == "SCHEDULED"
    assert "TransactionUID" not in ds
    assert ds.ScheduledProcedureStepStartDateTime == "20250310080000"
    assert ds.ScheduledProcedureStepPriority == "HIGH"
    assert ds.WorklistLabel == "TrueBeam1"
    assert ds.ScheduledStationNameCodeSequence[0].CodeValue == "TrueBeam1"
    code = ds.ScheduledWorkitemCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("121726", "DCM")
    item = ds.InputInformationSequence[0]
    assert item.ReferencedSOPSequence[0].ReferencedSOPClassUID == RT_PLAN_STORAGE
    assert item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == "1.2.826.0.1.3680043.8.498.1"
    assert item.StudyInstanceUID == ds.StudyInstanceUID
    assert item.DICOMRetrievalSequence[0].RetrieveAETitle
    params = {
        p.ConceptNameCodeSequence[0].CodeValue: p for p in ds.ScheduledProcessingParametersSequence
    }
    assert params["121740"].TextValue == "TREATMENT"
    assert float(params["2018002"].NumericValue) == 3
    assert float(params["2018003"].NumericValue) == 15
    assert check_ncreate(ds) == []
    assert missing_type2(ds) == []


def test_defaults_now_and_fresh_uids() -> None:
    before = datetime.now().replace(microsecond=0)
    a = build_workitem(patient_id="1", patient_name="A^B", label="x")
    b = build_workitem(patient_id="1", patient_name="A^B", label="x")
    assert a.SOPInstanceUID != b.SOPInstanceUID
    assert a.ScheduledProcedureStepPriority == "MEDIUM"
    assert datetime.strptime(a.ScheduledProcedureStepStartDateTime, "%Y%m%d%H%M%S") >= before
    assert len(a.InputInformationSequence) == 0
    assert len(a.ScheduledStationNameCodeSequence) == 0
    assert check_ncreate(a) == []


def test_parse_code() -> None:
    assert parse_code("121726^DCM^RT Treatment with Internal Verification") == (
        "121726",
        "DCM",
        "RT Treatment with Internal Verification",
    )
    assert parse_code("A,B,C") == ("A", "B", "C")
    with pytest.raises(ValueError):
        parse_code("121726^DCM")


def test_write_part10_roundtrip(tmp_path: Path) -> None:
    ds = build_workitem(patient_id="P", patient_name="García^José", label="Fx", plan_uid="1.2.3")
    path = write_part10(ds, tmp_path / "w.dcm")
    assert path.read_bytes()[128:132] == b"DICM"
    back = pydicom.dcmread(path)
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.to_json_dict() == ds.to_json_dict()
    assert str(back.PatientName) == "García^José"
    assert "file_meta" not in ds.__dict__ or not getattr(ds, "file_meta", None)
    assert [p.name for p in tmp_path.iterdir()] == ["w.dcm"]  # no temp file left


def test_samples_are_valid_and_diverse() -> None:
    loaded, skipped = load_datasets([ROOT / "ups_instances"])
    assert skipped == [s for s in skipped if s.path.name == "README.md"]
    assert len(loaded) >= 5
    for item in loaded:
        ds = item.dataset
        assert check_ncreate(ds) == [], item.path
        assert missing_type2(ds) == [], item.path
        assert len(ds.ScheduledWorkitemCodeSequence) == 1
        assert len(ds.ScheduledStationNameCodeSequence) == 1
        assert ds.InputInformationSequence[0].ReferencedSOPSequence[0].ReferencedSOPClassUID == (
            RT_PLAN_STORAGE
        )
        assert len(ds.ScheduledProcessingParametersSequence) == 4
    datasets = [i.dataset for i in loaded]
    assert len({d.PatientID for d in datasets}) >= 4
    assert len({d.ScheduledStationNameCodeSequence[0].CodeValue for d in datasets}) >= 2
    assert {d.ScheduledProcedureStepPriority for d in datasets} == {"HIGH", "MEDIUM", "LOW"}
    assert len({d.ScheduledProcedureStepStartDateTime for d in datasets}) == len(datasets)
    assert len({d.SOPInstanceUID for d in datasets}) == len(datasets)


def test_make_samples_is_reproducible(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_samples.py"), str(tmp_path)],
        check=True,
        capture_output=True,
    )
    made = sorted(p.name for p in tmp_path.iterdir())
    committed = sorted(p.name for p in (ROOT / "ups_instances").glob("*.dcm"))
    assert made == committed
    for name in made:
        assert (tmp_path / name).read_bytes() == (ROOT / "ups_instances" / name).read_bytes(), name


def test_dicomfiles_walk_and_report(tmp_path: Path) -> None:
    ds = build_workitem(patient_id="P", patient_name="A^B", label="Fx")
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    write_part10(ds, tmp_path / "sub" / "deeper" / "a.dcm")
    (tmp_path / "notes.txt").write_text("hello, not DICOM\n")
    (tmp_path / "empty.dcm").write_bytes(b"")
    (tmp_path / ".hidden").write_text("ignored")
    truncated = (tmp_path / "sub" / "deeper" / "a.dcm").read_bytes()[:300]
    (tmp_path / "truncated.dcm").write_bytes(truncated)
    raw = tmp_path / "raw.dcm"  # a dataset without preamble and file meta
    ds.save_as(raw, implicit_vr=True, little_endian=True, enforce_file_format=False)
    loaded, skipped = load_datasets([tmp_path, tmp_path / "missing.dcm"])
    assert sorted(i.path.name for i in loaded) == ["a.dcm", "raw.dcm"]
    assert all(i.dataset.SOPInstanceUID == ds.SOPInstanceUID for i in loaded)
    reasons = {s.path.name: s.reason for s in skipped}
    assert set(reasons) == {"notes.txt", "empty.dcm", "truncated.dcm", "missing.dcm"}
    assert "not a DICOM file" in reasons["notes.txt"]
    assert reasons["empty.dcm"] == "empty file"
    assert reasons["missing.dcm"] == "no such file"
    assert (
        reasons["truncated.dcm"] in ("no data elements",)
        or "unreadable" in reasons["truncated.dcm"]
    )
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(b"\0" * 128 + b"DICM" + bytes(range(256)) * 4)
    with pytest.raises(NotDicomError, match=r"unreadable|no data"):
        read_dataset(garbage)
    with pytest.raises(NotDicomError):
        read_dataset(tmp_path / "notes.txt")
