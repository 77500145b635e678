"""Attributes named on the command line, and data sets built from them as bytes.

A key is `Keyword`, a tag (`(0040,4005)` or `00404005`), or a path into sequences
(`ScheduledStationNameCodeSequence[0].CodeValue`, item 0 when no index is given),
with an optional `=VALUE`; without a value it is a return key. The UPS attributes
tdwii uses itself are known here; any other keyword is looked up in pydicom's
dictionary (imported only then). `build(keys)` encodes them as an Explicit VR Little
Endian data set without pydicom: a C-FIND identifier, an N-SET modification list.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from tdwii_cli import exitcodes
from tdwii_cli.dicom import rawdataset as raw
from tdwii_cli.errors import TdwiiError

# keyword -> (tag, VR): the attributes tdwii reads and writes itself
KNOWN: dict[str, tuple[int, str]] = {
    "SpecificCharacterSet": (0x00080005, "CS"),
    "SOPClassUID": (0x00080016, "UI"),
    "SOPInstanceUID": (0x00080018, "UI"),
    "CodeValue": (0x00080100, "SH"),
    "CodingSchemeDesignator": (0x00080102, "SH"),
    "CodeMeaning": (0x00080104, "LO"),
    "ReferencedSOPClassUID": (0x00081150, "UI"),
    "ReferencedSOPInstanceUID": (0x00081155, "UI"),
    "ReferencedSOPSequence": (0x00081199, "SQ"),
    "TypeOfInstances": (0x0040E020, "CS"),
    "TransactionUID": (0x00081195, "UI"),
    "PatientName": (0x00100010, "PN"),
    "PatientID": (0x00100020, "LO"),
    "IssuerOfPatientID": (0x00100021, "LO"),
    "PatientBirthDate": (0x00100030, "DA"),
    "PatientSex": (0x00100040, "CS"),
    "StudyInstanceUID": (0x0020000D, "UI"),
    "AdmissionID": (0x00380010, "LO"),
    "ValueType": (0x0040A040, "CS"),
    "ConceptNameCodeSequence": (0x0040A043, "SQ"),
    "NumericValue": (0x0040A30A, "DS"),
    "TextValue": (0x0040A160, "UT"),
    "MeasurementUnitsCodeSequence": (0x004008EA, "SQ"),
    "ScheduledProcedureStepStartDateTime": (0x00404005, "DT"),
    "ScheduledProcedureStepModificationDateTime": (0x00404010, "DT"),
    "ExpectedCompletionDateTime": (0x00404011, "DT"),
    "ScheduledProcedureStepExpirationDateTime": (0x00404008, "DT"),
    "ScheduledWorkitemCodeSequence": (0x00404018, "SQ"),
    "InputInformationSequence": (0x00404021, "SQ"),
    "ScheduledStationNameCodeSequence": (0x00404025, "SQ"),
    "ScheduledStationClassCodeSequence": (0x00404026, "SQ"),
    "ScheduledStationGeographicLocationCodeSequence": (0x00404027, "SQ"),
    "PerformedStationNameCodeSequence": (0x00404028, "SQ"),
    "PerformedWorkitemCodeSequence": (0x00404019, "SQ"),
    "ScheduledHumanPerformersSequence": (0x00404034, "SQ"),
    "InputReadinessState": (0x00404041, "CS"),
    "PerformedProcedureStepStartDateTime": (0x00404050, "DT"),
    "PerformedProcedureStepEndDateTime": (0x00404051, "DT"),
    "OutputInformationSequence": (0x00404033, "SQ"),
    "ScheduledProcessingParametersSequence": (0x00741210, "SQ"),
    "ProcedureStepState": (0x00741000, "CS"),
    "ProcedureStepProgressInformationSequence": (0x00741002, "SQ"),
    "ProcedureStepProgress": (0x00741004, "DS"),
    "ProcedureStepProgressDescription": (0x00741006, "ST"),
    "ProcedureStepProgressParametersSequence": (0x00741007, "SQ"),
    "ProcedureStepCancellationDateTime": (0x00404052, "DT"),
    "ReasonForCancellation": (0x00741238, "LT"),
    "ContactURI": (0x0074100A, "UR"),
    "ContactDisplayName": (0x0074100C, "LO"),
    "ScheduledProcedureStepPriority": (0x00741200, "CS"),
    "WorklistLabel": (0x00741202, "LO"),
    "ProcedureStepLabel": (0x00741204, "LO"),
    "UnifiedProcedureStepPerformedProcedureSequence": (0x00741216, "SQ"),
    "ReceivingAE": (0x00741234, "AE"),
    "RequestingAE": (0x00741236, "AE"),
    "DeletionLock": (0x00741230, "LO"),
    "SCPStatus": (0x00741242, "CS"),
    "SubscriptionListStatus": (0x00741244, "CS"),
    "UnifiedProcedureStepListStatus": (0x00741246, "CS"),
    "CommentsOnTheScheduledProcedureStep": (0x00400400, "LT"),
}
_BY_TAG = {tag: (keyword, vr) for keyword, (tag, vr) in KNOWN.items()}
_STEP = re.compile(r"^(?P<name>[A-Za-z][A-Za-z0-9]*|\(?[0-9A-Fa-f]{4},?[0-9A-Fa-f]{4}\)?)"
                   r"(?:\[(?P<index>\d+)\])?$")  # fmt: skip


def _bad(message: str) -> TdwiiError:
    return TdwiiError(message, exitcodes.USAGE, hint="e.g. -k PatientID=P1 or -k (0010,0020)")


def lookup(name: str) -> tuple[int, str, str]:
    """(tag, VR, keyword) of a keyword or a tag; a `TdwiiError` naming it when unknown."""
    text = name.strip()
    hexed = text.strip("()").replace(",", "")
    if len(hexed) == 8 and all(c in "0123456789abcdefABCDEF" for c in hexed):
        tag = int(hexed, 16)
        if tag in _BY_TAG:
            keyword, vr = _BY_TAG[tag]
            return tag, vr, keyword
        return _from_dictionary(tag=tag, name=text)
    if text in KNOWN:
        tag, vr = KNOWN[text]
        return tag, vr, text
    return _from_dictionary(keyword=text, name=text)


def _from_dictionary(
    *, name: str, tag: int | None = None, keyword: str = ""
) -> tuple[int, str, str]:
    from pydicom import datadict

    if tag is None:
        found = datadict.tag_for_keyword(keyword)
        if found is None:
            raise _bad(f"unknown attribute keyword {name!r}")
        tag = int(found)
    try:
        vr = datadict.dictionary_VR(tag)
    except KeyError:
        raise _bad(f"{name} is not in the DICOM data dictionary") from None
    return tag, vr.split(" or ")[0], datadict.keyword_for_tag(tag) or name


@dataclass(frozen=True)
class Step:
    """One attribute on a key's path (in a sequence's item `index` when not the last)."""

    tag: int
    vr: str
    keyword: str
    index: int = 0


@dataclass(frozen=True)
class Key:
    """An attribute path and its value (None: a return key, matched by nothing)."""

    path: tuple[Step, ...]
    value: str | None = None

    @property
    def name(self) -> str:
        return ".".join(
            f"{s.keyword}[{s.index}]" if i < len(self.path) - 1 else s.keyword
            for i, s in enumerate(self.path)
        )


def parse_path(text: str) -> tuple[Step, ...]:
    """`A[0].B` -> its steps; every step but the last must be a sequence."""
    steps: list[Step] = []
    parts = text.strip().split(".")
    for i, part in enumerate(parts):
        match = _STEP.match(part.strip())
        if match is None:
            raise _bad(f"{text!r} is not an attribute path (Keyword, Keyword[0].Keyword or a tag)")
        tag, vr, keyword = lookup(match["name"])
        if i < len(parts) - 1 and vr != "SQ":
            raise _bad(f"{keyword} in {text!r} is not a sequence")
        if match["index"] is not None and vr != "SQ":
            raise _bad(f"{keyword} in {text!r} is not a sequence: it has no items")
        steps.append(Step(tag, vr, keyword, int(match["index"] or 0)))
    return tuple(steps)


def parse_key(text: str) -> Key:
    """`PATH=VALUE` or `PATH` (a return key)."""
    path, sep, value = text.partition("=")
    return Key(parse_path(path), value if sep else None)


# -- building a data set ----------------------------------------------------------------

_Node = dict[int, tuple[str, "str | list[_Node] | None"]]


def _put(node: _Node, key: Key) -> None:
    *walk, last = key.path
    for step in walk:
        _vr, current = node.get(step.tag, (step.vr, None))
        items: list[_Node] = current if isinstance(current, list) else []
        while len(items) <= step.index:
            items.append({})
        node[step.tag] = (step.vr, items)
        node = items[step.index]
    if last.vr == "SQ":
        if key.value:
            raise _bad(f"{key.name} is a sequence: give a value to one of its attributes")
        node.setdefault(last.tag, (last.vr, []))
    else:
        node[last.tag] = (last.vr, key.value)


def _hex(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _value(tag: int, vr: str, value: str) -> bytes:
    code = vr.encode()
    fmt = raw.NUMERIC_FORMATS.get(code)
    try:
        if fmt is not None:
            parts = value.split("\\")
            number = float if fmt[-1] in "fd" else int
            return b"".join(struct.pack(fmt, number(v)) for v in parts)
        if vr == "AT":
            return b"".join(
                struct.pack("<HH", t >> 16, t & 0xFFFF)
                for t in (lookup(v)[0] for v in value.split("\\"))
            )
    except (ValueError, struct.error):
        raise _bad(
            f"({tag >> 16:04X},{tag & 0xFFFF:04X}) {vr}: {value!r} is not a value of its VR"
        ) from None
    if vr in ("OB", "OW", "OF", "OD", "OL", "OV", "UN"):
        raise _bad(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) is binary ({vr}): not settable here")
    return value.encode("utf-8")


def _encode(node: _Node) -> bytes:
    out = []
    for tag in sorted(node):
        vr, value = node[tag]
        if isinstance(value, list):
            out.append(raw.sequence_element(tag, [_encode(item) for item in value]))
        else:
            body = b"" if value is None else _value(tag, vr, value)
            out.append(raw.element(tag, vr.encode(), body))
    return b"".join(out)


def build(keys: Iterable[Key]) -> bytes:
    """The keys as an Explicit VR Little Endian data set (later keys win; UTF-8 text, with
    Specific Character Set ISO_IR 192 when any value is not ASCII)."""
    node: _Node = {}
    for key in keys:
        _put(node, key)
    if any(not value.isascii() for value in keys_with_values(node)):
        node[0x00080005] = ("CS", "ISO_IR 192")
    return _encode(node)


def keys_with_values(node: _Node) -> Iterable[str]:
    """Every value in a node tree (for the character set check)."""
    for _vr, value in node.values():
        if isinstance(value, list):
            for item in value:
                yield from keys_with_values(item)
        elif value:
            yield value
