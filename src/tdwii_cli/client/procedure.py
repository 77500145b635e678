"""The performer's side of a workitem (IHE-RO TDW-II RO-60 to RO-65), and Request Cancel.

Each function takes an open `UpsClient` (so a delivery runs over one association)
and returns what happened or raises `DimseFailure`:

- `claim`: Change State to IN PROGRESS with a new Transaction UID (RO-60);
- `progress`: N-SET of the Procedure Step Progress Information (RO-62);
- `final_update`: N-SET of the performed procedure information (RO-64), filled from
  the workitem (its scheduled station and workitem codes), so the Change State to
  COMPLETED that `complete` sends next meets the final state requirements (RO-65);
- `cancel`: the performer's final update and Change State CANCELED;
- `request_cancel`: N-ACTION Request Cancel, for anyone who does not hold the
  Transaction UID.

Data sets are built as bytes (`dicom.keys`, `dicom.rawdataset`): none needs pydicom.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tdwii_cli.client.statuses import DimseFailure, judge
from tdwii_cli.client.upsclient import UpsClient
from tdwii_cli.dicom import rawdataset as raw
from tdwii_cli.dicom import status as st
from tdwii_cli.dicom import tags
from tdwii_cli.dicom.keys import KNOWN, Key, build, parse_path
from tdwii_cli.dicom.uids import UPS_PULL, UPS_PUSH, UPS_WATCH
from tdwii_cli.dicom.values import now_dt
from tdwii_cli.errors import TdwiiError
from tdwii_cli.ups.vocabulary import (
    CANCELED,
    CHANGE_STATE,
    COMPLETED,
    IN_PROGRESS,
    REQUEST_CANCEL,
)

RT_BEAMS_TREATMENT_RECORD = "1.2.840.10008.5.1.4.1.1.481.4"
DEFAULT_WORKITEM_CODE = ("121726", "DCM", "RT Treatment with Internal Verification")
STATION_SCHEME = "99IHERO2008"
# the beam a progress update is about, as a content item (tdwii's own concept code)
BEAM_CONCEPT = ("BEAM", "99TDWII", "Referenced Beam Number")

# what the final update reads from the workitem
FINAL_UPDATE_KEYS = (
    tags.PROCEDURE_STEP_STATE,
    tags.SCHEDULED_STATION_NAME_CODE_SEQUENCE,
    tags.SCHEDULED_WORKITEM_CODE_SEQUENCE,
    tags.PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE,
    KNOWN["StudyInstanceUID"][0],
)


def new_transaction_uid() -> str:
    """A fresh UID (2.25 and a random UUID, PS3.5 B.2)."""
    return f"2.25.{uuid.uuid4().int}"


def _tag(keyword: str) -> int:
    return KNOWN[keyword][0]


def data_set(values: dict[str, str]) -> bytes:
    """A small data set from `{path: value}` (paths as `dicom.keys` reads them)."""
    return build(Key(parse_path(path), value) for path, value in values.items())


# -- RO-60: claim ----------------------------------------------------------------------


def claim(client: UpsClient, uid: str, transaction_uid: str) -> int:
    """Change State SCHEDULED -> IN PROGRESS with `transaction_uid`; the status."""
    info = data_set({"ProcedureStepState": IN_PROGRESS, "TransactionUID": transaction_uid})
    rsp = client.action(uid, CHANGE_STATE, info, (UPS_PULL,))
    return judge(f"claim {uid}", rsp.status, rsp.comment, operation="N-ACTION")


def change_state(client: UpsClient, uid: str, state: str, transaction_uid: str) -> int:
    """Change State to COMPLETED or CANCELED with the performer's Transaction UID."""
    info = data_set({"ProcedureStepState": state, "TransactionUID": transaction_uid})
    rsp = client.action(uid, CHANGE_STATE, info, (UPS_PULL,))
    return judge(f"change state of {uid} to {state}", rsp.status, rsp.comment, operation="N-ACTION")


# -- RO-62: progress -------------------------------------------------------------------


def progress_info(percent: float, description: str = "", beam: int | None = None) -> bytes:
    """The N-SET modification list of a progress update (without the Transaction UID)."""
    base = "ProcedureStepProgressInformationSequence[0]."
    values = {f"{base}ProcedureStepProgress": _ds(percent)}
    if description:
        values[f"{base}ProcedureStepProgressDescription"] = description
    if beam is not None:
        item = f"{base}ProcedureStepProgressParametersSequence[0]."
        concept = f"{item}ConceptNameCodeSequence[0]."
        units = f"{item}MeasurementUnitsCodeSequence[0]."
        values.update(
            {
                f"{item}ValueType": "NUMERIC",
                f"{concept}CodeValue": BEAM_CONCEPT[0],
                f"{concept}CodingSchemeDesignator": BEAM_CONCEPT[1],
                f"{concept}CodeMeaning": BEAM_CONCEPT[2],
                f"{item}NumericValue": str(beam),
                f"{units}CodeValue": "1",
                f"{units}CodingSchemeDesignator": "UCUM",
                f"{units}CodeMeaning": "no units",
            }
        )
    return data_set(values)


def _ds(number: float) -> str:
    """A DS value (at most 16 characters)."""
    text = f"{number:g}"
    return text if len(text) <= 16 else f"{number:.6g}"


def progress(
    client: UpsClient,
    uid: str,
    transaction_uid: str,
    percent: float,
    description: str = "",
    beam: int | None = None,
) -> int:
    """N-SET of the progress (RO-62); the status."""
    modification = _with_transaction(progress_info(percent, description, beam), transaction_uid)
    rsp = client.set(uid, modification)
    return judge(f"progress update of {uid}", rsp.status, rsp.comment, operation="N-SET")


def _with_transaction(data: bytes, transaction_uid: str) -> bytes:
    """`data` with the Transaction UID added (in tag order)."""
    element = raw.text_element(tags.TRANSACTION_UID, b"UI", transaction_uid)
    return raw.ordered([*raw.elements(data), element])


# -- RO-64 and RO-65: final update, completed or canceled --------------------------------


@dataclass(frozen=True)
class Workitem:
    """What the final update takes from the workitem (its N-GET response, as bytes)."""

    data: bytes
    found: dict[int, raw.RawElement]

    @property
    def state(self) -> str:
        return raw.text_of(self.data, self.found.get(tags.PROCEDURE_STEP_STATE))

    def element(self, tag: int) -> raw.RawElement | None:
        return self.found.get(tag)


def read_workitem(client: UpsClient, uid: str, attributes: Sequence[int] = ()) -> Workitem:
    """N-GET of `uid` (the listed attributes, or all); `DimseFailure` when it fails."""
    rsp = client.get(uid, attributes)
    judge(f"N-GET {uid}", rsp.status, rsp.comment, operation="N-GET")
    data = rsp.explicit() or b""
    try:
        return Workitem(data, raw.scan(data))
    except raw.RawError as exc:
        raise TdwiiError(f"N-GET {uid}: the workitem cannot be read: {exc}") from None


def _retagged(workitem: Workitem, tag: int, new_tag: int) -> bytes | None:
    """Workitem element `tag` as element `new_tag` (a sequence copied whole), or None."""
    elem = workitem.element(tag)
    if elem is None or elem.vr != b"SQ" or not any(raw.items(workitem.data, elem)):
        return None
    return (
        struct.pack("<HH", new_tag >> 16, new_tag & 0xFFFF)
        + workitem.data[elem.start + 4 : elem.end]
    )


def _code_sequence(tag: int, code: tuple[str, str, str]) -> bytes:
    keywords = ("CodeValue", "CodingSchemeDesignator", "CodeMeaning")
    item = b"".join(
        raw.text_element(_tag(k), KNOWN[k][1].encode(), value)
        for k, value in zip(keywords, code, strict=True)
    )
    return raw.sequence_element(tag, [item])


def _outputs(workitem: Workitem, outputs: Iterable[str]) -> bytes:
    """The Output Information Sequence: one item per treatment record SOP Instance UID."""
    study = raw.text_of(workitem.data, workitem.element(_tag("StudyInstanceUID")))
    items = []
    for instance in outputs:
        ref = raw.text_element(_tag("ReferencedSOPClassUID"), b"UI", RT_BEAMS_TREATMENT_RECORD)
        ref += raw.text_element(_tag("ReferencedSOPInstanceUID"), b"UI", instance)
        item = [
            raw.sequence_element(_tag("ReferencedSOPSequence"), [ref]),
            raw.text_element(_tag("StudyInstanceUID"), b"UI", study),
            raw.text_element(_tag("TypeOfInstances"), b"CS", "DICOM"),
        ]
        items.append(b"".join(item))
    return raw.sequence_element(_tag("OutputInformationSequence"), items)


def performed_procedure(
    workitem: Workitem,
    started: str,
    station: str,
    outputs: Iterable[str] = (),
) -> bytes:
    """The Unified Procedure Step Performed Procedure Sequence of a final update (RO-64)."""
    station_tag = _tag("PerformedStationNameCodeSequence")
    code_tag = _tag("PerformedWorkitemCodeSequence")
    item = raw.ordered(
        [
            raw.text_element(
                _tag("PerformedProcedureStepStartDateTime"), b"DT", started or now_dt()
            ),
            raw.text_element(_tag("PerformedProcedureStepEndDateTime"), b"DT", now_dt()),
            _retagged(workitem, tags.SCHEDULED_STATION_NAME_CODE_SEQUENCE, station_tag)
            or _code_sequence(station_tag, (station, STATION_SCHEME, station)),
            _retagged(workitem, tags.SCHEDULED_WORKITEM_CODE_SEQUENCE, code_tag)
            or _code_sequence(code_tag, DEFAULT_WORKITEM_CODE),
            _outputs(workitem, outputs),
        ]
    )
    return raw.sequence_element(_tag("UnifiedProcedureStepPerformedProcedureSequence"), [item])


def _cancellation_progress(workitem: Workitem, reason: str) -> bytes:
    """The progress information with the cancellation date-time and reason, keeping the
    progress reported so far (N-SET replaces a sequence whole)."""
    mine = {_tag("ProcedureStepCancellationDateTime"), _tag("ReasonForCancellation")}
    progress = workitem.element(tags.PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE)
    kept = [
        workitem.data[e.start : e.end]
        for tag, e in raw.first_item(workitem.data, progress).items()
        if tag not in mine
    ]
    kept.append(raw.text_element(_tag("ProcedureStepCancellationDateTime"), b"DT", now_dt()))
    if reason:
        kept.append(raw.text_element(_tag("ReasonForCancellation"), b"LT", reason))
    return raw.sequence_element(
        tags.PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE, [raw.ordered(kept)]
    )


def final_update(
    client: UpsClient,
    uid: str,
    transaction_uid: str,
    *,
    started: str,
    station: str,
    outputs: Iterable[str] = (),
    cancel_reason: str | None = None,
) -> Workitem:
    """N-GET the workitem, then N-SET its final update (RO-64); the workitem as read.

    With `cancel_reason` (even '') the update is a cancellation's: the progress
    information also gets the cancellation date-time and the reason."""
    workitem = read_workitem(client, uid, FINAL_UPDATE_KEYS)
    if workitem.state in (COMPLETED, CANCELED):
        raise DimseFailure(
            f"final update of {uid}", st.UPS_MAY_NO_LONGER_BE_UPDATED, f"it is {workitem.state}"
        )
    parts = [performed_procedure(workitem, started, station, outputs)]
    if cancel_reason is not None:
        parts.insert(0, _cancellation_progress(workitem, cancel_reason))
    modification = _with_transaction(b"".join(parts), transaction_uid)
    rsp = client.set(uid, modification)
    judge(f"final update of {uid}", rsp.status, rsp.comment, operation="N-SET")
    return workitem


def complete(
    client: UpsClient,
    uid: str,
    transaction_uid: str,
    *,
    started: str,
    station: str,
    outputs: Iterable[str] = (),
) -> int:
    """The final update, then Change State COMPLETED (RO-64, RO-65); the last status."""
    final_update(client, uid, transaction_uid, started=started, station=station, outputs=outputs)
    return change_state(client, uid, COMPLETED, transaction_uid)


def cancel(
    client: UpsClient,
    uid: str,
    transaction_uid: str,
    *,
    started: str,
    station: str,
    reason: str = "",
) -> int:
    """The performer cancels: final update with the reason, then Change State CANCELED."""
    final_update(
        client, uid, transaction_uid, started=started, station=station, cancel_reason=reason
    )
    return change_state(client, uid, CANCELED, transaction_uid)


def request_cancel(
    client: UpsClient, uid: str, *, reason: str = "", contact: str = "", contact_uri: str = ""
) -> int:
    """N-ACTION Request Cancel (anyone may ask; the SCP or the performer decides)."""
    values = {"ReasonForCancellation": reason, "ContactDisplayName": contact}
    if contact_uri:
        values["ContactURI"] = contact_uri
    info = data_set({k: v for k, v in values.items() if v})
    rsp = client.action(uid, REQUEST_CANCEL, info, (UPS_PUSH, UPS_PULL, UPS_WATCH))
    return judge(f"request cancel of {uid}", rsp.status, rsp.comment, operation="N-ACTION")
