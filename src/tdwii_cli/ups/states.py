"""The UPS state machine (PS3.4 CC.1.1, CC.2.1, CC.2.2, CC.2.6): pure rules, DIMSE statuses.

States: SCHEDULED (only ever by N-CREATE) -> IN PROGRESS (Change State with a new
Transaction UID, recorded by the SCP) -> COMPLETED or CANCELED (Change State with
that Transaction UID). COMPLETED and CANCELED are final. A SCHEDULED step cannot
jump to a final state by Change State; Request Cancel cancels it directly.

Nothing here touches the store or the network: each function takes the current
state (and the recorded Transaction UID) and returns a `Decision` with the status
to answer; `apply_nset`, `complete` and `cancel` edit a dataset in place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tdwii_cli.dicom import status as st
from tdwii_cli.dicom import tags
from tdwii_cli.dicom.values import now_dt
from tdwii_cli.ups.vocabulary import CANCELED as CANCELED
from tdwii_cli.ups.vocabulary import COMPLETED as COMPLETED
from tdwii_cli.ups.vocabulary import FINAL as FINAL
from tdwii_cli.ups.vocabulary import IN_PROGRESS as IN_PROGRESS
from tdwii_cli.ups.vocabulary import SCHEDULED as SCHEDULED
from tdwii_cli.ups.vocabulary import STATES as STATES

# Attributes an N-SET may never change (identity of the instance, its state).
_FIXED = {
    tags.SOP_CLASS_UID: "SOP Class UID",
    tags.SOP_INSTANCE_UID: "SOP Instance UID",
    tags.PROCEDURE_STEP_STATE: "Procedure Step State",
}


@dataclass(frozen=True)
class Decision:
    """What to answer: `status` (0 = go ahead), an Error Comment, and for Request Cancel
    what to do (`action`: "cancel" at once, or "notify" the performer)."""

    status: int
    comment: str = ""
    action: str = ""

    @property
    def proceed(self) -> bool:
        return self.status == st.SUCCESS

    @property
    def is_warning(self) -> bool:
        return 0xB000 <= self.status <= 0xBFFF


OK = Decision(st.SUCCESS)


def _txn(value: Any) -> str:
    return str(value or "").strip()


def change_state(
    current: str, recorded_txn: str | None, requested: str, given_txn: Any, ds: Dataset
) -> Decision:
    """N-ACTION Change State (action type 1) from `current` to `requested`.

    `ds` is the stored workitem (for the COMPLETED final-state requirements).
    """
    requested = str(requested or "").strip().upper()
    given = _txn(given_txn)
    if requested not in STATES:
        return Decision(st.INVALID_ATTRIBUTE_VALUE, f"unknown Procedure Step State {requested!r}")
    if requested == SCHEDULED:
        return Decision(st.UPS_ONLY_BY_NCREATE, "a UPS becomes SCHEDULED only by N-CREATE")
    if current == SCHEDULED:
        if requested != IN_PROGRESS:
            return Decision(st.UPS_NOT_IN_PROGRESS, "the UPS is not yet IN PROGRESS")
        if not given:
            return Decision(
                st.UPS_WRONG_TRANSACTION_UID, "a Transaction UID is needed to claim a UPS"
            )
        return OK
    if current == IN_PROGRESS:
        if requested == IN_PROGRESS:
            return Decision(st.UPS_ALREADY_IN_PROGRESS, "the UPS is already IN PROGRESS")
        if given != _txn(recorded_txn):
            return Decision(
                st.UPS_WRONG_TRANSACTION_UID, "the Transaction UID is not the performer's"
            )
        if requested == COMPLETED:
            problems = final_state_problems(ds)
            if problems:
                return Decision(st.UPS_FINAL_STATE_NOT_MET, problems[0])
        return OK
    if current == CANCELED:
        if requested == CANCELED:
            return Decision(st.UPS_ALREADY_CANCELED, "the UPS is already CANCELED")
        return Decision(st.UPS_MAY_NO_LONGER_BE_UPDATED, "the UPS is CANCELED")
    if current == COMPLETED:
        if requested == COMPLETED:
            return Decision(st.UPS_ALREADY_COMPLETED, "the UPS is already COMPLETED")
        return Decision(st.UPS_MAY_NO_LONGER_BE_UPDATED, "the UPS is COMPLETED")
    return Decision(st.UPS_MAY_NO_LONGER_BE_UPDATED, f"unknown stored state {current!r}")


def final_state_problems(ds: Dataset) -> list[str]:
    """Why `ds` may not become COMPLETED (empty when it may): PS3.4 CC.2.5.1.1.

    The Unified Procedure Step Performed Procedure Sequence must hold an item
    with Performed Procedure Step Start and End DateTime, a Performed Station
    Name Code Sequence item and a Performed Workitem Code Sequence item.
    """
    seq = ds.get("UnifiedProcedureStepPerformedProcedureSequence")
    if not seq:
        return ["Unified Procedure Step Performed Procedure Sequence is missing"]
    item = seq[0]
    problems = []
    for keyword, words in (
        ("PerformedProcedureStepStartDateTime", "Performed Procedure Step Start DateTime"),
        ("PerformedProcedureStepEndDateTime", "Performed Procedure Step End DateTime"),
    ):
        if not str(item.get(keyword) or "").strip():
            problems.append(f"{words} is missing")
    for keyword, words in (
        ("PerformedStationNameCodeSequence", "Performed Station Name Code Sequence"),
        ("PerformedWorkitemCodeSequence", "Performed Workitem Code Sequence"),
    ):
        if not item.get(keyword):
            problems.append(f"{words} is missing")
    return problems


def check_nset(current: str, recorded_txn: str | None, modification: Dataset) -> Decision:
    """N-SET of a UPS in state `current` (PS3.4 CC.2.6.3).

    SCHEDULED: may be edited without a Transaction UID (one given is C310: the
    UPS is not IN PROGRESS yet). IN PROGRESS: the performer's Transaction UID
    is required (C301). COMPLETED / CANCELED: C300. Procedure Step State, SOP
    Class and SOP Instance UID are never set by N-SET (0106).
    """
    given = _txn(
        modification.get(tags.TRANSACTION_UID).value if tags.TRANSACTION_UID in modification else ""
    )
    if current in FINAL:
        return Decision(st.UPS_MAY_NO_LONGER_BE_UPDATED, f"the UPS is {current}")
    if current == SCHEDULED:
        if given:
            return Decision(
                st.UPS_NOT_IN_PROGRESS, "Transaction UID given but the UPS is SCHEDULED"
            )
    elif current == IN_PROGRESS and given != _txn(recorded_txn):
        return Decision(st.UPS_WRONG_TRANSACTION_UID, "the Transaction UID is not the performer's")
    for tag, words in _FIXED.items():
        if tag in modification:
            return Decision(st.INVALID_ATTRIBUTE_VALUE, f"{words} cannot be set by N-SET")
    return OK


def apply_nset(ds: Dataset, modification: Dataset) -> set[int]:
    """Apply an N-SET modification list to `ds` (in place); return the tags changed.

    Each attribute replaces the stored one whole (sequences included); the
    Transaction UID is a credential, never stored.
    """
    changed: set[int] = set()
    for elem in modification:
        if elem.tag == tags.TRANSACTION_UID or elem.tag.element == 0:
            continue
        ds[elem.tag] = elem
        changed.add(int(elem.tag))
    return changed


def request_cancel(current: str) -> Decision:
    """N-ACTION Request Cancel (action type 2) on a UPS in state `current`."""
    if current == SCHEDULED:
        return Decision(st.SUCCESS, action="cancel")
    if current == IN_PROGRESS:
        return Decision(st.SUCCESS, action="notify")
    if current == CANCELED:
        return Decision(st.UPS_ALREADY_CANCELED, "the UPS is already CANCELED")
    if current == COMPLETED:
        return Decision(st.UPS_CANCEL_ALREADY_COMPLETED, "the UPS is already COMPLETED")
    return Decision(st.UPS_MAY_NO_LONGER_BE_UPDATED, f"unknown stored state {current!r}")


def complete(ds: Dataset) -> None:
    """Mark `ds` COMPLETED (final-state checked already); Output Information added empty."""
    ds.ProcedureStepState = COMPLETED
    item = ds.UnifiedProcedureStepPerformedProcedureSequence[0]
    if "OutputInformationSequence" not in item:
        item.OutputInformationSequence = Sequence()


def cancellation_info(info: Dataset | None) -> Dataset:
    """The cancellation details an SCU may give (reason, reason codes, contact)."""
    out = Dataset()
    if info is None:
        return out
    for keyword in (
        "ReasonForCancellation",
        "ProcedureStepDiscontinuationReasonCodeSequence",
        "ContactDisplayName",
        "ContactURI",
    ):
        if keyword in info and info[keyword].value not in (None, ""):
            out[keyword] = info[keyword]
    return out


def cancel(ds: Dataset, details: Dataset | None = None) -> None:
    """Mark `ds` CANCELED: the cancellation date-time and, when given, the discontinuation
    reason go into the Procedure Step Progress Information Sequence; a Performed
    Procedure Step End DateTime is filled in when the performer left none."""
    now = now_dt()
    ds.ProcedureStepState = CANCELED
    progress = ds.get("ProcedureStepProgressInformationSequence")
    if not progress:
        ds.ProcedureStepProgressInformationSequence = Sequence([Dataset()])
        progress = ds.ProcedureStepProgressInformationSequence
    item = progress[0]
    item.ProcedureStepCancellationDateTime = now
    for elem in details or Dataset():
        if elem.keyword in (
            "ReasonForCancellation",
            "ProcedureStepDiscontinuationReasonCodeSequence",
        ):
            item[elem.tag] = elem
    performed = ds.get("UnifiedProcedureStepPerformedProcedureSequence")
    if not performed:
        ds.UnifiedProcedureStepPerformedProcedureSequence = Sequence([Dataset()])
        performed = ds.UnifiedProcedureStepPerformedProcedureSequence
    if not str(performed[0].get("PerformedProcedureStepEndDateTime") or "").strip():
        performed[0].PerformedProcedureStepEndDateTime = now


def state_report(ds: Dataset) -> Dataset:
    """Event Information of a UPS State Report (event type 1) for workitem `ds`."""
    info = Dataset()
    info.ProcedureStepState = ds.get("ProcedureStepState", "")
    info.InputReadinessState = ds.get("InputReadinessState", "")
    if info.ProcedureStepState == CANCELED:
        progress = ds.get("ProcedureStepProgressInformationSequence")
        if progress:
            for keyword in (
                "ReasonForCancellation",
                "ProcedureStepDiscontinuationReasonCodeSequence",
            ):
                if keyword in progress[0]:
                    info[keyword] = progress[0][keyword]
    return info


ASSIGNMENT_KEYWORDS = (
    "ScheduledStationNameCodeSequence",
    "ScheduledStationClassCodeSequence",
    "ScheduledStationGeographicLocationCodeSequence",
    "ScheduledHumanPerformersSequence",
    "HumanPerformerOrganization",
)


def assigned_report(ds: Dataset) -> Dataset | None:
    """Event Information of a UPS Assigned report (type 5), or None when nothing is assigned."""
    if not ds.get("ScheduledStationNameCodeSequence") and not ds.get(
        "ScheduledHumanPerformersSequence"
    ):
        return None
    info = Dataset()
    for keyword in ASSIGNMENT_KEYWORDS:
        if keyword in ds:
            info[keyword] = ds[keyword]
    info.InputReadinessState = ds.get("InputReadinessState", "")
    return info


def progress_report(ds: Dataset) -> Dataset:
    """Event Information of a UPS Progress Report (type 3)."""
    info = Dataset()
    info.ProcedureStepState = ds.get("ProcedureStepState", "")
    if "ProcedureStepProgressInformationSequence" in ds:
        info.ProcedureStepProgressInformationSequence = ds.ProcedureStepProgressInformationSequence
    return info
