"""DICOM audit messages (PS3.15 A.5): the codes tdwii uses and the XML of one message.

An `AuditMessage` is plain data; `xml()` writes it in the element order of the A.5.1
schema (EventIdentification, ActiveParticipant+, AuditSourceIdentification,
ParticipantObjectIdentification*), as one line: every value is escaped for XML and
every control character (a newline too) is written as a visible escape, so nothing a
peer sent can forge a line or a tag. Binary values (a query, a detail) go out base64.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import re
from dataclasses import dataclass

# -- codes (PS3.15 A.5.3, PS3.16 CID 400-405) --------------------------------------------


@dataclass(frozen=True)
class Code:
    """A coded value: code, coding scheme, meaning."""

    code: str
    scheme: str
    meaning: str


# Event IDs
APPLICATION_ACTIVITY = Code("110100", "DCM", "Application Activity")
PROCEDURE_RECORD = Code("110111", "DCM", "Procedure Record")
QUERY = Code("110112", "DCM", "Query")
SECURITY_ALERT = Code("110113", "DCM", "Security Alert")
# Event type codes
APPLICATION_START = Code("110120", "DCM", "Application Start")
APPLICATION_STOP = Code("110121", "DCM", "Application Stop")
NODE_AUTHENTICATION = Code("110126", "DCM", "Node Authentication")
SECURITY_CONFIGURATION = Code("110129", "DCM", "Security Configuration")
USE_OF_RESTRICTED_FUNCTION = Code("110132", "DCM", "Use of Restricted Function")
AUDIT_RECORDING_STOPPED = Code("110133", "DCM", "Audit Recording Stopped")
AUDIT_RECORDING_STARTED = Code("110134", "DCM", "Audit Recording Started")
SECURITY_ROLES_CHANGED = Code("110136", "DCM", "Security Roles Changed")
# Role ID codes
APPLICATION = Code("110150", "DCM", "Application")
DESTINATION = Code("110152", "DCM", "Destination Role ID")
SOURCE = Code("110153", "DCM", "Source Role ID")
# Participant object ID type codes
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
URI = Code("12", "RFC-3881", "URI")
STUDY_INSTANCE_UID = Code("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID = Code("110181", "DCM", "SOP Class UID")
NODE_ID = Code("110182", "DCM", "Node ID")

# EventOutcomeIndicator
SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = 0, 4, 8, 12
# ParticipantObjectTypeCode and ...TypeCodeRole
PERSON, SYSTEM_OBJECT = 1, 2
ROLE_PATIENT, ROLE_REPORT, ROLE_SECURITY_RESOURCE, ROLE_JOB = 1, 3, 13, 20
# NetworkAccessPointTypeCode
MACHINE_NAME, IP_ADDRESS = 1, 2


@dataclass(frozen=True)
class Participant:
    """An ActiveParticipant: who took part, and whether it asked for the event."""

    user_id: str
    requestor: bool
    alternative: str | None = None  # AETITLES=... for a DICOM application (A.5.2.2)
    name: str | None = None
    address: str | None = None
    address_kind: int = IP_ADDRESS
    roles: tuple[Code, ...] = ()


@dataclass(frozen=True)
class ParticipantObject:
    """A ParticipantObjectIdentification: the patient, the workitem, the query, the subject
    of an alert. Exactly one of `name` and `query` is written (the schema's choice)."""

    object_id: str
    id_type: Code
    type_code: int | None = None
    role: int | None = None
    name: str | None = None
    query: bytes | None = None
    details: tuple[tuple[str, bytes], ...] = ()
    sop_class: str | None = None  # ParticipantObjectDescription/SOPClass
    instances: tuple[str, ...] = ()


@dataclass(frozen=True)
class AuditMessage:
    """One audit message (PS3.15 A.5.1)."""

    event: Code
    action: str  # C, R, U, D or E
    outcome: int
    when: dt.datetime
    participants: tuple[Participant, ...]
    source_id: str
    types: tuple[Code, ...] = ()
    outcome_text: str | None = None
    objects: tuple[ParticipantObject, ...] = ()
    source_type: str = "4"  # application server process

    def xml(self) -> str:
        """The message as one line of XML (no declaration: it is UTF-8). What repeats from
        one message to the next (codes, our participant, a peer's, the source) is written
        once and kept."""
        outcome = (
            f"<EventOutcomeDescription>{_text(self.outcome_text)}</EventOutcomeDescription>"
            if self.outcome_text
            else ""
        )
        return (
            f'<AuditMessage><EventIdentification EventActionCode="{self.action}" '
            f'EventDateTime="{_datetime(self.when)}" EventOutcomeIndicator="{self.outcome}">'
            f"{_event_codes(self.event, self.types)}{outcome}</EventIdentification>"
            f"{''.join(map(_participant, self.participants))}"
            f"{_source(self.source_id, self.source_type)}"
            f"{''.join(map(_object, self.objects))}</AuditMessage>"
        )


# -- writing -------------------------------------------------------------------------------

# Characters XML 1.0 forbids, every C0/C1 control (tab and newline included: one line), the
# invisible format and separator characters that can make text read otherwise than it is
# (bidi overrides, zero-width, line separators), and the backslash (so that an escape in the
# output is always ours).
_UNSAFE = re.compile(
    "[\x00-\x1f\x7f-\x9f\\\\\u200b-\u200f\u2028-\u202e\u2060-\u2069\ud800-\udfff\ufeff\ufffe\uffff]"
)


def _visible(match: re.Match[str]) -> str:
    char = match.group(0)
    if char == "\\":
        return "\\\\"
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


_PLAIN = re.compile(r"[ !#-%'-;=?-\[\]-~]*")  # printable ASCII but & < > " \\


def clean(text: object) -> str:
    """`text` with every character XML or a one-line log cannot take written as an escape."""
    return _UNSAFE.sub(_visible, str(text))


def _text(value: object) -> str:
    text = str(value)
    if _PLAIN.fullmatch(text):  # most values: nothing to escape
        return text
    return clean(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _attr(value: object) -> str:
    text = str(value)
    if _PLAIN.fullmatch(text):
        return text
    return _text(text).replace('"', "&quot;")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _datetime(when: dt.datetime) -> str:
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.isoformat(timespec="microseconds")


@functools.lru_cache(maxsize=256)
def _event_codes(event: Code, types: tuple[Code, ...]) -> str:
    return _code("EventID", event) + "".join(_code("EventTypeCode", code) for code in types)


@functools.lru_cache(maxsize=16)
def _source(source_id: str, source_type: str) -> str:
    return (
        f'<AuditSourceIdentification AuditSourceID="{_attr(source_id)}">'
        f'<AuditSourceTypeCode csd-code="{_attr(source_type)}"/></AuditSourceIdentification>'
    )


@functools.lru_cache(maxsize=256)
def _code(tag: str, code: Code) -> str:
    return (
        f'<{tag} csd-code="{_attr(code.code)}" codeSystemName="{_attr(code.scheme)}" '
        f'originalText="{_attr(code.meaning)}"/>'
    )


@functools.lru_cache(maxsize=1024)  # ours never changes; a peer's, for its association
def _participant(p: Participant) -> str:
    attrs = [f'UserID="{_attr(p.user_id)}"']
    if p.alternative:
        attrs.append(f'AlternativeUserID="{_attr(p.alternative)}"')
    if p.name:
        attrs.append(f'UserName="{_attr(p.name)}"')
    attrs.append(f'UserIsRequestor="{"true" if p.requestor else "false"}"')
    if p.address:
        attrs.append(f'NetworkAccessPointID="{_attr(p.address)}"')
        attrs.append(f'NetworkAccessPointTypeCode="{p.address_kind}"')
    inner = "".join(_code("RoleIDCode", role) for role in p.roles)
    return f"<ActiveParticipant {' '.join(attrs)}>{inner}</ActiveParticipant>"


def _object(o: ParticipantObject) -> str:
    out = f'<ParticipantObjectIdentification ParticipantObjectID="{_attr(o.object_id)}"'
    if o.type_code is not None:
        out += f' ParticipantObjectTypeCode="{o.type_code}"'
    if o.role is not None:
        out += f' ParticipantObjectTypeCodeRole="{o.role}"'
    out += ">" + _code("ParticipantObjectIDTypeCode", o.id_type)
    if o.query is not None:
        out += f"<ParticipantObjectQuery>{_b64(o.query)}</ParticipantObjectQuery>"
    else:
        out += f"<ParticipantObjectName>{_text(o.name or '')}</ParticipantObjectName>"
    for kind, value in o.details:
        out += f'<ParticipantObjectDetail type="{_attr(kind)}" value="{_b64(value)}"/>'
    if o.sop_class is not None:
        out += (
            "<ParticipantObjectDescription>"
            f'<SOPClass UID="{_attr(o.sop_class)}" NumberOfInstances="{len(o.instances)}">'
        )
        for uid in o.instances:
            out += f'<Instance UID="{_attr(uid)}"/>'
        out += "</SOPClass></ParticipantObjectDescription>"
    return out + "</ParticipantObjectIdentification>"
