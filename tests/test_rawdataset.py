"""C-FIND responses cut from stored bytes: the same bytes pydicom would write, for defined and
undefined lengths; malformed bytes are a `RawError`, never a wrong answer."""

from __future__ import annotations

import struct

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from conftest import undefined_lengths
from tdwii_cli.dicom import codec, rawdataset
from tdwii_cli.ups.matching import Query
from tdwii_cli.ups.workitem import build_workitem


def _query() -> Dataset:
    station = Dataset()
    station.CodeValue = "TB1"
    station.CodingSchemeDesignator = ""
    q = Dataset()
    q.ProcedureStepState = "SCHEDULED"
    q.ScheduledStationNameCodeSequence = Sequence([station])
    q.PatientName = ""
    q.PatientID = ""
    q.AdmissionID = ""  # absent from some records: an empty answer
    q.ScheduledWorkitemCodeSequence = Sequence()  # the whole sequence
    q.TransactionUID = ""  # never answered
    return q


@pytest.mark.parametrize("undefined", [False, True])
def test_the_cut_equals_pydicom(undefined: bool) -> None:
    ds = build_workitem(patient_id="P1", patient_name="Raw^Test", label="Fx 1", station="TB1")
    ds.TransactionUID = "1.2.3"
    blob = undefined_lengths(ds) if undefined else codec.encode(ds)
    query = Query.from_identifier(_query())
    raw = query.response_bytes(blob)
    assert raw is not None
    assert codec.decode(raw) == query.response(codec.decode(blob))
    if not undefined:
        assert raw == codec.encode(query.response(ds))
    assert b"1.2.3" not in raw
    assert query.post_filter_blob(blob)
    other = build_workitem(patient_id="P2", patient_name="Raw^Two", label="Fx", station="TB2")
    assert not query.post_filter_blob(codec.encode(other))


def test_malformed_bytes_raise() -> None:
    good = codec.encode(build_workitem(patient_id="P1", patient_name="A^B", label="x"))
    selection = rawdataset.Selection([rawdataset.Key(0x00100020, b"LO")])
    with pytest.raises(rawdataset.RawError):
        selection.pick(good[:-3])  # an element cut short
    bad_vr = struct.pack("<HH2sH", 0x0010, 0x0010, b"ZZ", 2) + b"AB"
    with pytest.raises(rawdataset.RawError):
        rawdataset.scan(bad_vr)
    open_sequence = struct.pack("<HH2sHL", 0x0040, 0x4025, b"SQ", 0, 0xFFFFFFFF)
    with pytest.raises(rawdataset.RawError):
        rawdataset.scan(open_sequence + struct.pack("<HHL", 0xFFFE, 0xE000, 0xFFFFFFFF))
