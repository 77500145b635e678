"""The UPS Push N-CREATE rules (PS3.4 CC.2.5, table CC.2.5-3), shared by client and server.

`check_ncreate(ds)` lists what an SCP must refuse in an N-CREATE attribute list,
each as a `Problem(status, message)`; the server answers the first problem's
status, the client prints every problem and skips the file. `complete_type2(ds)`
adds the Type 2 attributes the SCU left out, empty, as the SCP must.

Statuses (PS3.4 CC.2.5.4 and PS3.7 C.4.2):

- C309 the Procedure Step State is not SCHEDULED (checked first: it says most);
- 0120 a Type 1 attribute is missing, 0121 it is present but empty;
- 0106 an invalid value: an unknown Priority or Input Readiness State, a
  malformed DT, a SOP Class UID other than UPS Push, and a non-empty Transaction
  UID. The Transaction UID is Type 2 at N-CREATE and "shall be empty" (the SCP
  makes one at the first N-ACTION Change State); C301 ("the correct Transaction
  UID was not provided") is an N-SET/N-ACTION status that the N-CREATE status
  table does not list, so a value there is an invalid attribute value, 0106.

The checks inside sequences cover the Type 1 attributes of the items that
TDW-II and the UPS SOP classes rely on (Code Sequence Macro items of the
Scheduled Workitem Code Sequence, the Referenced Instances and Access Macro of
the Input Information Sequence, content items of the Scheduled Processing
Parameters Sequence, Referenced Request and Replaced Procedure Step items).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag

from tdwii_cli.dicom import codec, rawdataset
from tdwii_cli.dicom.status import (
    INVALID_ATTRIBUTE_VALUE,
    MISSING_ATTRIBUTE,
    MISSING_ATTRIBUTE_VALUE,
    SUCCESS,
    UPS_NOT_SCHEDULED,
)
from tdwii_cli.dicom.uids import UPS_PUSH
from tdwii_cli.dicom.values import valid_dt

PRIORITIES = ("HIGH", "MEDIUM", "LOW")
READINESS_STATES = ("READY", "UNAVAILABLE", "INCOMPLETE")
_ENUMERATED = (  # keyword, its name in words, the values the standard allows
    ("ScheduledProcedureStepPriority", "Scheduled Procedure Step Priority", PRIORITIES),
    ("InputReadinessState", "Input Readiness State", READINESS_STATES),
)

# Type 1 at N-CREATE for the SCU (table CC.2.5-3, "1/1").
TYPE1 = (
    "ScheduledProcedureStepPriority",
    "ProcedureStepLabel",
    "ScheduledProcedureStepStartDateTime",
    "InputReadinessState",
    "ProcedureStepState",
)

# Type 2 at N-CREATE: the SCU sends them, possibly empty; the SCP adds them empty
# when missing. Table CC.2.5-3 ("2/2", "2/1", and "1C/2" for Patient ID and Study
# Instance UID, which the SCP keeps as Type 2). Replaced Procedure Step Sequence
# is 1C (present only with a value) and is therefore never added empty; Transaction
# UID is Type 2 but left out when absent (it "shall be empty" anyway).
TYPE2 = (
    # Unified Procedure Step Scheduled Procedure Information Module
    "ScheduledProcedureStepModificationDateTime",
    "WorklistLabel",
    "ScheduledProcessingParametersSequence",
    "ScheduledStationNameCodeSequence",
    "ScheduledStationClassCodeSequence",
    "ScheduledStationGeographicLocationCodeSequence",
    "ScheduledHumanPerformersSequence",
    "ScheduledProcedureStepExpirationDateTime",
    "ScheduledWorkitemCodeSequence",
    "CommentsOnTheScheduledProcedureStep",
    "InputInformationSequence",
    "StudyInstanceUID",
    # Unified Procedure Step Relationship Module
    "PatientName",
    "PatientID",
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "OtherPatientIDsSequence",
    "PatientBirthDate",
    "PatientSex",
    "AdmissionID",
    "IssuerOfAdmissionIDSequence",
    "AdmittingDiagnosesDescription",
    "AdmittingDiagnosesCodeSequence",
    "ReferencedRequestSequence",
    # Unified Procedure Step Progress Information / Performed Procedure Information
    "ProcedureStepProgressInformationSequence",
    "UnifiedProcedureStepPerformedProcedureSequence",
)

DT_KEYWORDS = (
    "ScheduledProcedureStepStartDateTime",
    "ScheduledProcedureStepModificationDateTime",
    "ScheduledProcedureStepExpirationDateTime",
    "ExpectedCompletionDateTime",
)


@dataclass(frozen=True)
class Problem:
    """One reason an SCP refuses the N-CREATE: the DIMSE status and a readable line."""

    status: int
    message: str

    def __str__(self) -> str:
        return f"{self.status:04X} {self.message}"


_MISSING = object()
_TAGS: dict[str, tuple[int, str]] = {}
# Short string VRs whose emptiness and (ASCII) text the check can read from the
# undecoded bytes: converting elements one by one is most of a check's cost otherwise.
_RAW_VRS = frozenset(("AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "SH", "LO"))


class _RawItem:
    """A sequence item still as Explicit VR Little Endian bytes, read as `_get` reads a
    `Dataset`: short strings from their bytes, nested sequences as more `_RawItem`s,
    anything else decoded by pydicom when asked for. Building pydicom's items is
    most of a workitem's check otherwise."""

    def __init__(self, data: bytes, start: int, end: int) -> None:
        self._data = data
        self._elements = rawdataset.scan(data, start, end)

    def get_item(self, tag: int) -> RawDataElement | None:
        e = self._elements.get(tag)
        if e is None:
            return None
        value = self._data[e.value : e.end]
        return RawDataElement(
            BaseTag(tag), e.vr.decode("ascii"), len(value), value, e.value, False, True
        )

    def __getitem__(self, tag: int) -> _Value:
        e = self._elements[tag]
        if e.vr == b"SQ":
            return _Value(_raw_items(self._data, e.value, e.end))
        return _Value(codec.decode(self._data[e.start : e.end])[tag].value)


_Item = Dataset | _RawItem


def _tag_of(keyword: str) -> tuple[int, str]:
    """(tag, dictionary VR) of `keyword`, remembered."""
    cached = _TAGS.get(keyword)
    if cached is None:
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        cached = _TAGS[keyword] = (tag, dictionary_VR(tag))
    return cached


class _Value:
    def __init__(self, value: object) -> None:
        self.value = value


def _raw_items(data: bytes, start: int, end: int) -> list[_RawItem]:
    return [_RawItem(data, a, b) for a, b in rawdataset.value_items(data, start, end)]


def _get(ds: _Item, keyword: str) -> object:
    """The value of `keyword` in `ds`, or `_MISSING`.

    Short strings still undecoded are read from their bytes (stripped of padding)
    without converting the element; everything else is pydicom's value.
    """
    tag, vr = _tag_of(keyword)
    elem = ds.get_item(tag)
    if elem is None:
        return _MISSING
    if isinstance(elem, RawDataElement) and (elem.VR or vr) in _RAW_VRS:
        return (elem.value or b"").decode("latin-1").strip(" \0")
    return ds[tag].value


def _plain(value: object) -> str | None:
    """`value` when it is text in plain ASCII (the same in every character set), else None."""
    if isinstance(value, str) and value.isascii() and "\x1b" not in value:
        return value
    return None


def plain_text(ds: Dataset, keyword: str) -> str | None:
    """The text of `keyword` (stripped, '' when absent) read without pydicom when it is
    plain ASCII; None when pydicom must decode it (another VR, other characters)."""
    if _tag_of(keyword)[1] not in _RAW_VRS:
        return None
    value = _get(ds, keyword)
    return "" if value is _MISSING or value is None else _plain(value)


def attribute_text(ds: Dataset, keyword: str) -> str:
    """The stripped text of `keyword` ('' when absent): read from its bytes when plain
    (`plain_text`), else decoded by pydicom."""
    fast = plain_text(ds, keyword)
    if fast is not None:
        return fast
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def plain_code(ds: Dataset, keyword: str) -> str | None:
    """'CodeValue^CodingSchemeDesignator' of the first item of code sequence `keyword`
    ('' when none), read like `plain_text`; None when pydicom must decode it."""
    found = _items(ds, keyword)
    if not found:
        return None if _get(ds, keyword) not in (_MISSING, None) else ""
    item = found[0][1]
    parts = []
    for key in ("CodeValue", "LongCodeValue", "URNCodeValue", "CodingSchemeDesignator"):
        value = _get(item, key)
        text = "" if value is _MISSING or value is None else _plain(value)
        if text is None:
            return None
        parts.append(text.strip())
    value = parts[0] or parts[1] or parts[2]
    return f"{value}^{parts[3]}" if value or parts[3] else ""


def _empty_value(value: object) -> bool:
    if value is None or value is _MISSING:
        return True
    if isinstance(value, (str, bytes)):
        return not value.strip()
    if isinstance(value, Sequence | list):
        return len(value) == 0
    return False


def _is_empty(ds: _Item, keyword: str) -> bool:
    return _empty_value(_get(ds, keyword))


def _has(ds: _Item, keyword: str) -> bool:
    """Present with a non-empty value."""
    return not _empty_value(_get(ds, keyword))


def _text(ds: _Item, keyword: str) -> str:
    value = _get(ds, keyword)
    return "" if value is None or value is _MISSING else str(value).strip()


def _require(ds: _Item, keywords: Iterable[str], where: str = "") -> list[Problem]:
    """0120/0121 problems for the Type 1 `keywords` of `ds` (`where` names the item)."""
    problems = []
    for keyword in keywords:
        value = _get(ds, keyword)
        name = f"{where}{keyword}"
        if value is _MISSING:
            problems.append(Problem(MISSING_ATTRIBUTE, f"missing Type 1 attribute {name}"))
        elif _empty_value(value):
            problems.append(Problem(MISSING_ATTRIBUTE_VALUE, f"Type 1 attribute {name} is empty"))
    return problems


def _items(ds: _Item, keyword: str) -> list[tuple[int, _Item]]:
    elem = ds.get_item(_tag_of(keyword)[0])
    if (
        isinstance(elem, RawDataElement)
        and elem.VR == "SQ"
        and not elem.is_implicit_VR
        and elem.is_little_endian
        and isinstance(elem.value, bytes)
    ):
        try:  # the items straight from their bytes
            found: list[_Item] = list(_raw_items(elem.value, 0, len(elem.value)))
            return list(enumerate(found, start=1))
        except rawdataset.RawError:
            pass  # pydicom decides what they are
    value = _get(ds, keyword)
    if not isinstance(value, Sequence | list):
        return []
    return [
        (i, item) for i, item in enumerate(value, start=1) if isinstance(item, Dataset | _RawItem)
    ]


def _check_codes(ds: _Item, keyword: str, where: str = "") -> list[Problem]:
    """Code Sequence Macro: Code Value (or Long/URN), Coding Scheme Designator, Code Meaning."""
    problems = []
    for i, item in _items(ds, keyword):
        place = f"{where}{keyword}[{i}]."
        has_value = any(_has(item, k) for k in ("CodeValue", "LongCodeValue", "URNCodeValue"))
        if not has_value:
            problems.append(
                Problem(MISSING_ATTRIBUTE_VALUE, f"{place}CodeValue is missing or empty")
            )
        if _get(item, "URNCodeValue") is _MISSING:
            problems += _require(item, ["CodingSchemeDesignator"], place)
        problems += _require(item, ["CodeMeaning"], place)
    return problems


def _check_sequences(ds: Dataset) -> list[Problem]:
    problems = _check_codes(ds, "ScheduledWorkitemCodeSequence")
    for i, item in _items(ds, "InputInformationSequence"):
        place = f"InputInformationSequence[{i}]."
        problems += _require(item, ["TypeOfInstances", "ReferencedSOPSequence"], place)
        for j, ref in _items(item, "ReferencedSOPSequence"):
            problems += _require(
                ref,
                ["ReferencedSOPClassUID", "ReferencedSOPInstanceUID"],
                f"{place}ReferencedSOPSequence[{j}].",
            )
        if _text(item, "TypeOfInstances") == "DICOM":
            problems += _require(item, ["StudyInstanceUID", "SeriesInstanceUID"], place)
        for j, retrieve in _items(item, "DICOMRetrievalSequence"):
            problems += _require(
                retrieve, ["RetrieveAETitle"], f"{place}DICOMRetrievalSequence[{j}]."
            )
    for i, item in _items(ds, "ScheduledProcessingParametersSequence"):
        place = f"ScheduledProcessingParametersSequence[{i}]."
        problems += _require(item, ["ValueType", "ConceptNameCodeSequence"], place)
        problems += _check_codes(item, "ConceptNameCodeSequence", place)
        if _text(item, "ValueType") == "NUMERIC":
            problems += _require(item, ["MeasurementUnitsCodeSequence"], place)
    for i, item in _items(ds, "ScheduledHumanPerformersSequence"):
        place = f"ScheduledHumanPerformersSequence[{i}]."
        problems += _require(item, ["HumanPerformerCodeSequence"], place)
        problems += _check_codes(item, "HumanPerformerCodeSequence", place)
    for i, item in _items(ds, "ReferencedRequestSequence"):
        place = f"ReferencedRequestSequence[{i}]."
        problems += _require(item, ["StudyInstanceUID", "RequestedProcedureID"], place)
    if _get(ds, "ReplacedProcedureStepSequence") is not _MISSING:
        problems += _require(ds, ["ReplacedProcedureStepSequence"])
    for i, item in _items(ds, "ReplacedProcedureStepSequence"):
        problems += _require(
            item,
            ["ReferencedSOPClassUID", "ReferencedSOPInstanceUID"],
            f"ReplacedProcedureStepSequence[{i}].",
        )
    return problems


def check_ncreate(ds: Dataset) -> list[Problem]:
    """Every reason to refuse `ds` as a UPS Push N-CREATE attribute list (empty: acceptable).

    The first problem is the one to answer: a state problem (C309) comes first,
    then missing/empty Type 1 attributes, then invalid values.
    """
    problems: list[Problem] = []
    if _has(ds, "ProcedureStepState"):
        state = _text(ds, "ProcedureStepState")
        if state != "SCHEDULED":
            problems.append(
                Problem(UPS_NOT_SCHEDULED, f"Procedure Step State is {state}, not SCHEDULED")
            )
    problems += _require(ds, TYPE1)
    problems += _check_sequences(ds)

    def present(keyword: str) -> bool:
        return _has(ds, keyword)

    for keyword, words, allowed in _ENUMERATED:
        value = _text(ds, keyword)
        if present(keyword) and value not in allowed:
            choices = f"{', '.join(allowed[:-1])} or {allowed[-1]}"
            problems.append(Problem(INVALID_ATTRIBUTE_VALUE, f"{words} {value!r} is not {choices}"))
    for keyword in DT_KEYWORDS:
        if present(keyword) and not valid_dt(_text(ds, keyword)):
            problems.append(
                Problem(
                    INVALID_ATTRIBUTE_VALUE,
                    f"{keyword} {_text(ds, keyword)!r} is not a valid DT (YYYYMMDDHHMMSS)",
                )
            )
    if present("TransactionUID"):
        problems.append(
            Problem(
                INVALID_ATTRIBUTE_VALUE,
                "Transaction UID must be absent or empty at N-CREATE "
                "(the performer sets it when claiming the workitem)",
            )
        )
    if present("SOPClassUID") and _text(ds, "SOPClassUID") != UPS_PUSH:
        problems.append(
            Problem(
                INVALID_ATTRIBUTE_VALUE,
                f"SOP Class UID {_text(ds, 'SOPClassUID')} is not UPS Push ({UPS_PUSH})",
            )
        )
    return problems


def first_status(problems: list[Problem]) -> int:
    """The status to answer for `problems` (0000 when there is none)."""
    return problems[0].status if problems else SUCCESS


def complete_type2(ds: Dataset) -> Dataset:
    """Add the missing Type 2 N-CREATE attributes to `ds`, empty; return `ds` (changed in place)."""
    for keyword in TYPE2:
        if keyword in ds:
            continue
        tag = tag_for_keyword(keyword)
        assert tag is not None, keyword
        vr = dictionary_VR(tag)
        ds.add_new(tag, vr, Sequence() if vr == "SQ" else None)
    return ds


def missing_type2(ds: Dataset) -> list[str]:
    """The Type 2 N-CREATE keywords absent from `ds` (what `complete_type2` would add)."""
    present = ds.keys()  # tags as ints: no keyword lookups
    return [keyword for keyword in TYPE2 if _tag_of(keyword)[0] not in present]
