"""The worklist query of a treatment delivery device (IHE-RO RO-58) and its answers, as bytes.

`WorklistQuery` is what `tdwii ups find` asks: its station, state, a day or a
date-time range, a patient, a label, and any other key (`dicom.keys`); `identifier()`
encodes the C-FIND identifier with the return keys a worklist table shows.
`Match.parse` reads one C-FIND response (Explicit VR Little Endian) into the row
of that table without pydicom.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from tdwii_cli import exitcodes
from tdwii_cli.dicom import rawdataset as raw
from tdwii_cli.dicom import tags
from tdwii_cli.dicom.keys import Key, build, parse_path
from tdwii_cli.dicom.values import valid_dt
from tdwii_cli.errors import TdwiiError
from tdwii_cli.ups.vocabulary import STATES

# the return keys a worklist row shows (always asked for)
RETURN_KEYS = (
    "SOPInstanceUID",
    "ProcedureStepState",
    "PatientName",
    "PatientID",
    "ProcedureStepLabel",
    "WorklistLabel",
    "ScheduledStationNameCodeSequence[0].CodeValue",
    "ScheduledStationNameCodeSequence[0].CodingSchemeDesignator",
    "ScheduledStationNameCodeSequence[0].CodeMeaning",
    "ScheduledProcedureStepStartDateTime",
    "ScheduledProcedureStepPriority",
    "InputReadinessState",
)
_STATION_CODE = "ScheduledStationNameCodeSequence[0].CodeValue"
_CODE_VALUE = 0x00080100


def parse_when(text: str, option: str, *, end: bool = False) -> str:
    """A DICOM DT from `today`, ISO 8601 (`2026-03-10`, `2026-03-10T08:00`) or a DT."""
    value = text.strip()
    if value.lower() == "today":
        value = date.today().isoformat()
    try:
        if "-" in value[1:] or "T" in value or ":" in value:
            moment = datetime.fromisoformat(value)
            if len(value) <= 10 and end:  # a whole day: up to its end
                return moment.strftime("%Y%m%d") + "235959"
            return moment.strftime("%Y%m%d%H%M%S")
    except ValueError:
        pass
    if valid_dt(value):
        return value
    raise TdwiiError(
        f"{option} {text!r} is not a date or a date and time",
        exitcodes.USAGE,
        hint="use e.g. 2026-03-10, 2026-03-10T08:00, 20260310 or today",
    )


@dataclass(frozen=True)
class WorklistQuery:
    """What to match (empty: anything) and which keys to return besides the row's."""

    station: str = ""
    state: str = ""
    day: str = ""  # a DT (a date), or ''
    start: str = ""  # a DT range's ends, or ''
    end: str = ""
    patient_id: str = ""
    label: str = ""
    keys: tuple[Key, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.state and self.state.upper() not in STATES:
            raise TdwiiError(
                f"--state {self.state!r} is not a UPS state",
                exitcodes.USAGE,
                hint="SCHEDULED, IN PROGRESS, COMPLETED or CANCELED",
            )
        if self.day and (self.start or self.end):
            raise TdwiiError("--date excludes --from/--to", exitcodes.USAGE)

    def _date_range(self) -> str:
        if self.day:
            return f"{self.day[:8]}000000-{self.day[:8]}235959"
        if self.start or self.end:
            return f"{self.start}-{self.end}"
        return ""

    def identifier(self) -> bytes:
        """The C-FIND identifier (Explicit VR Little Endian)."""
        keys = [Key(parse_path(name)) for name in RETURN_KEYS]
        matching = {
            "ProcedureStepState": self.state.upper(),
            "ScheduledProcedureStepStartDateTime": self._date_range(),
            "PatientID": self.patient_id,
            "ProcedureStepLabel": self.label,
            _STATION_CODE: self.station,
        }
        keys += [Key(parse_path(name), value) for name, value in matching.items() if value]
        return build([*keys, *self.keys])


def _text(data: bytes, found: dict[int, raw.RawElement], tag: int) -> str:
    return raw.text_of(data, found.get(tag))


@dataclass(frozen=True)
class Match:
    """One workitem as a worklist row (its response's bytes kept in `data`)."""

    uid: str
    state: str
    patient_name: str
    patient_id: str
    label: str
    station: str
    scheduled: str
    priority: str
    readiness: str
    data: bytes = field(repr=False, default=b"")

    @classmethod
    def parse(cls, data: bytes) -> Match:
        """The row of a C-FIND response; `raw.RawError` when it cannot be walked."""
        found = raw.scan(data)
        station = raw.first_item(data, found.get(tags.SCHEDULED_STATION_NAME_CODE_SEQUENCE))
        return cls(
            uid=_text(data, found, tags.SOP_INSTANCE_UID),
            state=_text(data, found, tags.PROCEDURE_STEP_STATE),
            patient_name=_text(data, found, tags.PATIENT_NAME).replace("^", " ").strip(),
            patient_id=_text(data, found, tags.PATIENT_ID),
            label=_text(data, found, 0x00741204),
            station=raw.text_of(data, station.get(_CODE_VALUE)),
            scheduled=_text(data, found, tags.SCHEDULED_PROCEDURE_STEP_START_DATETIME),
            priority=_text(data, found, tags.SCHEDULED_PROCEDURE_STEP_PRIORITY),
            readiness=_text(data, found, tags.INPUT_READINESS_STATE),
            data=data,
        )

    def to_row(self) -> dict[str, str]:
        return {
            "uid": self.uid,
            "state": self.state,
            "patient": f"{self.patient_name} ({self.patient_id})"
            if self.patient_name
            else self.patient_id,
            "label": self.label,
            "station": self.station,
            "scheduled": self.scheduled,
            "priority": self.priority,
            "readiness": self.readiness,
        }
