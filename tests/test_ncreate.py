"""The UPS N-CREATE rules shared by client and server (tdwii_cli.ups.ncreate)."""

from __future__ import annotations

import warnings

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from conftest import undefined_lengths
from tdwii_cli.dicom import codec
from tdwii_cli.dicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from tdwii_cli.dicom.values import valid_dt
from tdwii_cli.ups import ncreate
from tdwii_cli.ups.ncreate import Problem, check_ncreate, complete_type2, first_status
from tdwii_cli.ups.workitem import build_workitem


def _good() -> Dataset:
    return build_workitem(
        patient_id="P1",
        patient_name="Doe^Jane",
        label="Fx 1",
        station="TrueBeam1",
        plan_uid="1.2.3",
    )


def _checked(ds: Dataset) -> list[Problem]:
    """`check_ncreate(ds)`, asserted to be the same on `ds` as a server receives it (its
    sequences read from their bytes, defined and undefined lengths) and in Implicit VR."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom warns about the invalid values we set on purpose
        problems = check_ncreate(ds)
        for blob, syntax in [
            (codec.encode(ds), EXPLICIT_VR_LE),
            (undefined_lengths(ds), EXPLICIT_VR_LE),
            (codec.encode(ds, IMPLICIT_VR_LE), IMPLICIT_VR_LE),
        ]:
            assert check_ncreate(codec.decode(blob, syntax)) == problems
    return problems


def _statuses(ds: Dataset) -> list[int]:
    return [p.status for p in _checked(ds)]


def test_built_workitem_has_no_problem() -> None:
    assert _checked(_good()) == []
    assert first_status([]) == 0


def test_minimal_type1_only_dataset_passes() -> None:
    ds = Dataset()
    ds.ScheduledProcedureStepPriority = "LOW"
    ds.ProcedureStepLabel = "x"
    ds.InputReadinessState = "INCOMPLETE"
    ds.ScheduledProcedureStepStartDateTime = "20250310"
    ds.ProcedureStepState = "SCHEDULED"
    assert _checked(ds) == []


@pytest.mark.parametrize("state", ["COMPLETED", "IN PROGRESS", "CANCELED"])
def test_state_not_scheduled_is_c309_first(state: str) -> None:
    ds = _good()
    ds.ProcedureStepState = state
    del ds.ProcedureStepLabel
    problems = _checked(ds)
    assert problems[0] == Problem(0xC309, f"Procedure Step State is {state}, not SCHEDULED")
    assert first_status(problems) == 0xC309
    assert 0x0120 in [p.status for p in problems]


@pytest.mark.parametrize("keyword", ncreate.TYPE1)
def test_missing_type1_is_0120(keyword: str) -> None:
    ds = _good()
    delattr(ds, keyword)
    problems = _checked(ds)
    assert [p.status for p in problems] == [0x0120]
    assert keyword in problems[0].message


@pytest.mark.parametrize("keyword", ncreate.TYPE1)
def test_empty_type1_is_0121(keyword: str) -> None:
    ds = _good()
    ds[keyword].value = ""
    assert _statuses(ds) == [0x0121]


@pytest.mark.parametrize(
    ("keyword", "value"),
    [
        ("ScheduledProcedureStepPriority", "URGENT"),
        ("InputReadinessState", "MAYBE"),
        ("ScheduledProcedureStepStartDateTime", "2025-03-10 08:00"),
        ("ScheduledProcedureStepStartDateTime", "20251301"),
        ("ScheduledProcedureStepStartDateTime", "20250230"),
        ("ExpectedCompletionDateTime", "2025031025"),
        ("TransactionUID", "1.2.3.4"),
        ("SOPClassUID", "1.2.840.10008.5.1.4.34.6.3"),
    ],
)
def test_invalid_values_are_0106(keyword: str, value: str) -> None:
    ds = _good()
    setattr(ds, keyword, value)
    assert _statuses(ds) == [0x0106]


def test_empty_transaction_uid_is_fine() -> None:
    ds = _good()
    ds.TransactionUID = ""
    assert _checked(ds) == []


def test_type1_inside_sequences() -> None:
    ds = _good()
    del ds.ScheduledWorkitemCodeSequence[0].CodeMeaning
    del ds.InputInformationSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
    ds.ScheduledProcessingParametersSequence[0].ValueType = ""
    problems = _checked(ds)
    assert sorted(p.status for p in problems) == [0x0120, 0x0120, 0x0121]
    text = " ".join(p.message for p in problems)
    assert "ScheduledWorkitemCodeSequence[1].CodeMeaning" in text
    assert "InputInformationSequence[1].ReferencedSOPSequence[1].ReferencedSOPInstanceUID" in text


def test_replaced_procedure_step_is_1c_not_empty() -> None:
    ds = _good()
    ds.ReplacedProcedureStepSequence = Sequence()
    assert _statuses(ds) == [0x0121]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("2025", True),
        ("20250310", True),
        ("20250310080000", True),
        ("20250310080000.123456", True),
        ("20250310080000+0100", True),
        ("202503100800", True),
        ("20250310080060", True),  # leap second
        ("2025031008000", False),
        ("20250310080000.", False),
        ("20250310250000", False),
        ("20250310080000+1500", False),
        ("", False),
        ("abc", False),
    ],
)
def test_valid_dt(value: str, ok: bool) -> None:
    assert valid_dt(value) is ok


def test_complete_type2_adds_every_missing_one_empty() -> None:
    ds = Dataset()
    ds.PatientName = "Keep^Me"
    out = complete_type2(ds)
    assert out is ds
    assert str(ds.PatientName) == "Keep^Me"
    for keyword in ncreate.TYPE2:
        assert keyword in ds, keyword
        value = ds[keyword].value
        if keyword != "PatientName":
            assert value in (None, "", []) or len(value) == 0, keyword
    assert "ReplacedProcedureStepSequence" not in ds
    assert "TransactionUID" not in ds
    assert ds["InputInformationSequence"].VR == "SQ"
    assert ncreate.missing_type2(ds) == []


def test_plain_text_and_code_agree_with_pydicom_or_step_aside() -> None:
    from tdwii_cli.ups.ncreate import plain_code, plain_text

    ds = _good()
    received = codec.decode(codec.encode(ds))
    assert plain_text(received, "PatientID") == "P1"
    assert plain_text(received, "AdmissionID") == ""  # absent
    assert plain_text(received, "PatientName") is None  # PN: pydicom decides
    seq = ds.ScheduledStationNameCodeSequence[0]
    expected = f"{seq.CodeValue}^{seq.CodingSchemeDesignator}"
    assert plain_code(received, "ScheduledStationNameCodeSequence") == expected
    assert plain_code(received, "ReplacedProcedureStepSequence") == ""  # absent
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientID = "Zoë-1"
    ds.ScheduledStationNameCodeSequence[0].CodeValue = "Bühne"
    utf8 = codec.decode(codec.encode(ds))
    assert plain_text(utf8, "PatientID") is None
    assert plain_code(utf8, "ScheduledStationNameCodeSequence") is None
