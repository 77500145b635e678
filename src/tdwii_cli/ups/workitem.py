"""Build IHE-RO TDW-II workitems: UPS Push instances ready for N-CREATE (no I/O).

The workitem a Treatment Management System schedules for a treatment delivery
device: state SCHEDULED, the treatment machine in the Scheduled Station Name
Code Sequence, the RT Plan in the Input Information Sequence, and the four
Scheduled Processing Parameters content items of TDW-II (Treatment Delivery
Type, Plan Label, Current Fraction Number, Number of Fractions Planned); every
Type 1 and Type 2 attribute of the UPS N-CREATE (PS3.4 table CC.2.5-3) present.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from tdwii_cli.dicom.uids import RT_PLAN_STORAGE, UPS_PUSH
from tdwii_cli.dicom.values import format_dt
from tdwii_cli.ups.ncreate import complete_type2

RT_TREATMENT_WITH_INTERNAL_VERIFICATION = (
    "121726",
    "DCM",
    "RT Treatment with Internal Verification",
)
STATION_SCHEME = "99IHERO2008"  # TDW-II: the TMS defines the station codes


def code_item(value: str, scheme: str, meaning: str) -> Dataset:
    """One Code Sequence Macro item."""
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item


def text_item(concept: tuple[str, str, str], text: str) -> Dataset:
    """A TEXT content item (PS3.3 table 10-2)."""
    item = Dataset()
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = Sequence([code_item(*concept)])
    item.TextValue = text
    return item


def numeric_item(
    concept: tuple[str, str, str],
    number: int | float,
    units: tuple[str, str, str] = ("1", "UCUM", "no units"),
) -> Dataset:
    """A NUMERIC content item with its Measurement Units Code Sequence."""
    item = Dataset()
    item.ValueType = "NUMERIC"
    item.ConceptNameCodeSequence = Sequence([code_item(*concept)])
    item.NumericValue = str(number)
    item.MeasurementUnitsCodeSequence = Sequence([code_item(*units)])
    return item


TREATMENT_DELIVERY_TYPE = ("121740", "DCM", "Treatment Delivery Type")
PLAN_LABEL = ("2018001", "99IHERO2018", "Plan Label")
CURRENT_FRACTION = ("2018002", "99IHERO2018", "Current Fraction Number")
FRACTIONS_PLANNED = ("2018003", "99IHERO2018", "Number of Fractions Planned")


def parse_code(text: str) -> tuple[str, str, str]:
    """`VALUE^SCHEME^MEANING` (or `VALUE,SCHEME,MEANING`) -> a code triple."""
    sep = "^" if "^" in text else ","
    parts = [p.strip() for p in text.split(sep)]
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"code {text!r} is not VALUE^SCHEME^MEANING")
    return parts[0], parts[1], parts[2]


def build_workitem(
    *,
    patient_id: str,
    patient_name: str,
    label: str,
    worklist_label: str | None = None,
    scheduled: datetime | None = None,
    priority: str = "MEDIUM",
    station: str | None = None,
    plan_uid: str | None = None,
    workitem_code: tuple[str, str, str] = RT_TREATMENT_WITH_INTERNAL_VERIFICATION,
    sop_instance_uid: str | None = None,
    study_uid: str | None = None,
    series_uid: str | None = None,
    retrieve_aet: str = "TMS",
    plan_label: str | None = None,
    fraction: int = 1,
    fractions_planned: int = 1,
    delivery_type: str = "TREATMENT",
    birth_date: str = "",
    sex: str = "",
    comments: str | None = None,
    expected_duration_minutes: int | None = 15,
    uid_prefix: str | None = None,
) -> Dataset:
    """A TDW-II UPS Push instance, state SCHEDULED, ready for N-CREATE.

    `scheduled` defaults to now (local time). UIDs left None are generated
    (from `uid_prefix` when given, for example pydicom's own prefix); pass them
    for reproducible output. `station` is the treatment machine name (the Code
    Value of the Scheduled Station Name Code Sequence); `plan_uid` the RT Plan's
    SOP Instance UID, referenced in the Input Information Sequence with its
    study, series and the AE that serves it (`retrieve_aet`).
    """
    scheduled = scheduled or datetime.now().replace(microsecond=0)

    def uid() -> str:
        return generate_uid(prefix=uid_prefix) if uid_prefix else generate_uid()

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = UPS_PUSH
    ds.SOPInstanceUID = sop_instance_uid or uid()

    # Unified Procedure Step Scheduled Procedure Information Module
    ds.ScheduledProcedureStepPriority = priority
    ds.ScheduledProcedureStepModificationDateTime = ""
    ds.ProcedureStepLabel = label
    ds.WorklistLabel = worklist_label or ""
    ds.ScheduledProcessingParametersSequence = Sequence(
        [
            text_item(TREATMENT_DELIVERY_TYPE, delivery_type),
            text_item(PLAN_LABEL, plan_label or label),
            numeric_item(CURRENT_FRACTION, fraction),
            numeric_item(FRACTIONS_PLANNED, fractions_planned),
        ]
    )
    ds.ScheduledStationNameCodeSequence = Sequence(
        [code_item(station, STATION_SCHEME, station)] if station else []
    )
    ds.ScheduledStationClassCodeSequence = Sequence()
    ds.ScheduledStationGeographicLocationCodeSequence = Sequence()
    ds.ScheduledHumanPerformersSequence = Sequence()
    ds.ScheduledProcedureStepStartDateTime = format_dt(scheduled)
    if expected_duration_minutes:
        ds.ExpectedCompletionDateTime = format_dt(
            scheduled + timedelta(minutes=expected_duration_minutes)
        )
    ds.ScheduledProcedureStepExpirationDateTime = ""
    ds.ScheduledWorkitemCodeSequence = Sequence([code_item(*workitem_code)])
    ds.CommentsOnTheScheduledProcedureStep = comments or ""
    ds.InputReadinessState = "READY"
    study_uid = study_uid or (uid() if plan_uid else None)
    inputs = []
    if plan_uid:
        item = Dataset()
        item.TypeOfInstances = "DICOM"
        item.StudyInstanceUID = study_uid
        item.SeriesInstanceUID = series_uid or uid()
        ref = Dataset()
        ref.ReferencedSOPClassUID = RT_PLAN_STORAGE
        ref.ReferencedSOPInstanceUID = plan_uid
        item.ReferencedSOPSequence = Sequence([ref])
        retrieve = Dataset()
        retrieve.RetrieveAETitle = retrieve_aet
        item.DICOMRetrievalSequence = Sequence([retrieve])
        inputs.append(item)
    ds.InputInformationSequence = Sequence(inputs)
    ds.StudyInstanceUID = study_uid or ""

    # Unified Procedure Step Relationship Module
    ds.PatientName = patient_name
    ds.PatientID = patient_id
    ds.IssuerOfPatientID = ""
    ds.PatientBirthDate = birth_date
    ds.PatientSex = sex
    ds.AdmissionID = ""
    ds.ReferencedRequestSequence = Sequence()

    # Unified Procedure Step Progress Information Module
    ds.ProcedureStepState = "SCHEDULED"
    complete_type2(ds)
    return ds
