"""tdwii's audit events, each as the PS3.15 A.5.3 message it is (see the README's table).

- `application`: Application Activity (110100), Application Start or Stop.
- `security_alert`: Security Alert (110113) with its event type (node authentication,
  use of a restricted function, security configuration, roles changed, audit recording
  stopped or started) and an alert subject: the peer node, or the file reread.
- `query`: Query (110112) for a C-FIND, and for a subscription change, which is a
  standing query (the receiving AE is the third party it was asked for).
- `procedure_record`: Procedure Record (110111) for what is done to a workitem, with the
  patient, the study and the workitem (UPS Push SOP Class, the workitem's UID as its
  instance) as participant objects.

The node (AuditSourceID, our process and AE title) and the peer (address, calling AE
title, certificate subject) are in every message. The Transaction UID never is.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass

from tdwii_cli.audit import messages as m
from tdwii_cli.dicom.uids import UPS_PUSH
from tdwii_cli.tls.peer import PeerIdentity

QUERY_LIMIT = 16 << 10  # a query identifier kept whole in the message up to this size

# EventTypeCodes of tdwii's own (coding scheme 99TDWII), and the IHE-RO TDW-II transactions
N_CREATE = m.Code("N-CREATE", "99TDWII", "Create workitem")
N_SET = m.Code("N-SET", "99TDWII", "Update workitem")
N_GET = m.Code("N-GET", "99TDWII", "Read workitem")
CHANGE_STATE = m.Code("CHANGE-STATE", "99TDWII", "Change workitem state")
REQUEST_CANCEL = m.Code("REQUEST-CANCEL", "99TDWII", "Request workitem cancellation")
SUBSCRIBE = m.Code("SUBSCRIBE", "99TDWII", "Subscribe")
UNSUBSCRIBE = m.Code("UNSUBSCRIBE", "99TDWII", "Unsubscribe")
SUSPEND = m.Code("SUSPEND", "99TDWII", "Suspend global subscription")
RO_58 = m.Code("RO-58", "IHE Transactions", "Worklist Query")
RO_60 = m.Code("RO-60", "IHE Transactions", "UPS In Progress")
RO_62 = m.Code("RO-62", "IHE Transactions", "UPS Progress Update")
RO_64 = m.Code("RO-64", "IHE Transactions", "UPS Final Update")
RO_65 = m.Code("RO-65", "IHE Transactions", "UPS Completed/Canceled")


@dataclass(frozen=True)
class Node:
    """This worklist manager as audit messages name it."""

    ae_title: str
    hostname: str
    pid: int
    source_id: str = ""

    @property
    def audit_source(self) -> str:
        return self.source_id or self.hostname

    @functools.lru_cache(maxsize=8)  # noqa: B019 (a few per process, all alike)
    def participant(
        self, *, requestor: bool = False, roles: tuple[m.Code, ...] = ()
    ) -> m.Participant:
        """Our process: its ID (the syslog PROCID too), AE title and host."""
        return m.Participant(
            user_id=str(self.pid),
            requestor=requestor,
            alternative=f"AETITLES={self.ae_title}",
            name="tdwii serve",
            address=self.hostname,
            address_kind=m.MACHINE_NAME,
            roles=tuple(roles),
        )


@dataclass(frozen=True)
class Peer:
    """The other side: its address, the AE title it called as (if it got that far) and
    the certificate it presented (if any)."""

    host: str
    ae_title: str | None = None
    subject: str | None = None
    cn: str | None = None

    @classmethod
    def of(
        cls, identity: PeerIdentity | None, address: str = "", ae_title: str | None = None
    ) -> Peer:
        """The peer of a connection (`identity`), or only its `address` before TLS."""
        if identity is None:
            return cls(host=address, ae_title=ae_title)
        cn = identity.subject_cn
        # a refused handshake leaves only the CN of the certificate presented
        subject = identity.subject or (f"CN={cn}" if cn else None)
        return cls(identity.host or address, ae_title, subject, cn)

    @property
    def names(self) -> str:
        """AE title, certificate subject and address in words (alert descriptions)."""
        parts = [f"AE title {self.ae_title}"] if self.ae_title else []
        parts.append(f"certificate {self.subject}" if self.subject else "no certificate")
        parts.append(f"from {self.host}")
        return ", ".join(parts)

    @functools.lru_cache(maxsize=256)  # noqa: B019 (a peer calls many times)
    def participant(self, *, requestor: bool, roles: tuple[m.Code, ...] = ()) -> m.Participant:
        return m.Participant(
            user_id=self.ae_title or self.cn or self.host or "unknown",
            requestor=requestor,
            alternative=f"AETITLES={self.ae_title}" if self.ae_title else None,
            name=self.subject,
            address=self.host or None,
            address_kind=m.IP_ADDRESS,
            roles=tuple(roles),
        )


@dataclass(frozen=True)
class Patient:
    """The patient a workitem is for."""

    patient_id: str
    name: str = ""


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def application(node: Node, started: bool, when: dt.datetime | None = None) -> m.AuditMessage:
    """Application Activity: this worklist manager started or stopped."""
    return m.AuditMessage(
        event=m.APPLICATION_ACTIVITY,
        action="E",
        outcome=m.SUCCESS,
        when=when or _now(),
        types=(m.APPLICATION_START if started else m.APPLICATION_STOP,),
        participants=(node.participant(roles=(m.APPLICATION,)),),
        source_id=node.audit_source,
    )


def security_alert(
    node: Node,
    kind: m.Code,
    description: str,
    *,
    peer: Peer | None = None,
    subject_uri: str | None = None,
    outcome: int = m.MINOR_FAILURE,
    when: dt.datetime | None = None,
) -> m.AuditMessage:
    """Security Alert of `kind` about `peer` (the node) or `subject_uri` (a file)."""
    participants = [node.participant()]
    if peer is not None:
        participants.append(peer.participant(requestor=False))
    alert = (("Alert Description", description.encode("utf-8")),)
    if subject_uri is not None:
        subject = m.ParticipantObject(
            subject_uri,
            m.URI,
            m.SYSTEM_OBJECT,
            m.ROLE_SECURITY_RESOURCE,
            name=subject_uri,
            details=alert,
        )
    else:
        host = peer.host if peer is not None and peer.host else node.hostname
        subject = m.ParticipantObject(
            host,
            m.NODE_ID,
            m.SYSTEM_OBJECT,
            m.ROLE_SECURITY_RESOURCE,
            name=(peer.subject or peer.ae_title or host) if peer is not None else host,
            details=alert,
        )
    return m.AuditMessage(
        event=m.SECURITY_ALERT,
        action="E",
        outcome=outcome,
        when=when or _now(),
        types=(kind,),
        outcome_text=description,
        participants=tuple(participants),
        source_id=node.audit_source,
        objects=(subject,),
    )


def _query_object(sop_class: str, query: bytes, transfer_syntax: str) -> m.ParticipantObject:
    details = [("TransferSyntax", transfer_syntax.encode("ascii"))]
    if len(query) > QUERY_LIMIT:
        details.append(
            ("QueryOmitted", f"{len(query)} bytes, over {QUERY_LIMIT} kept in a message".encode())
        )
        query = b""
    return m.ParticipantObject(
        sop_class,
        m.SOP_CLASS_UID,
        m.SYSTEM_OBJECT,
        m.ROLE_REPORT,
        query=query,
        details=tuple(details),
    )


def query(
    node: Node,
    peer: Peer,
    sop_class: str,
    identifier: bytes,
    transfer_syntax: str,
    *,
    outcome: int = m.SUCCESS,
    outcome_text: str | None = None,
    types: Sequence[m.Code] = (),
    for_ae: str | None = None,
    when: dt.datetime | None = None,
) -> m.AuditMessage:
    """Query: `peer` asked `sop_class` with `identifier` (bytes in `transfer_syntax`);
    `for_ae`: the AE title it asked for (a subscription's receiving AE)."""
    participants = [
        peer.participant(requestor=True, roles=(m.SOURCE,)),
        node.participant(roles=(m.DESTINATION,)),
    ]
    if for_ae and for_ae != peer.ae_title:
        participants.append(
            m.Participant(user_id=for_ae, requestor=False, alternative=f"AETITLES={for_ae}")
        )
    return m.AuditMessage(
        event=m.QUERY,
        action="E",
        outcome=outcome,
        when=when or _now(),
        types=tuple(types),
        outcome_text=outcome_text,
        participants=tuple(participants),
        source_id=node.audit_source,
        objects=(_query_object(sop_class, identifier, transfer_syntax),),
    )


def procedure_record(
    node: Node,
    peer: Peer,
    action: str,
    workitem_uid: str,
    patient: Patient,
    *,
    study_uid: str | None = None,
    outcome: int = m.SUCCESS,
    outcome_text: str | None = None,
    types: Sequence[m.Code] = (),
    details: Sequence[tuple[str, str]] = (),
    when: dt.datetime | None = None,
) -> m.AuditMessage:
    """Procedure Record: `peer` did `action` (C, R, U) to workitem `workitem_uid` of
    `patient`; `details` (type, text) describe it (new state, attributes changed)."""
    objects = [
        m.ParticipantObject(
            patient.patient_id,
            m.PATIENT_NUMBER,
            m.PERSON,
            m.ROLE_PATIENT,
            name=patient.name,
        )
    ]
    if study_uid:
        objects.append(
            m.ParticipantObject(study_uid, m.STUDY_INSTANCE_UID, m.SYSTEM_OBJECT, m.ROLE_REPORT)
        )
    objects.append(
        m.ParticipantObject(
            UPS_PUSH,
            m.SOP_CLASS_UID,
            m.SYSTEM_OBJECT,
            m.ROLE_JOB,
            name=workitem_uid,
            details=tuple((kind, text.encode("utf-8")) for kind, text in details),
            sop_class=UPS_PUSH,
            instances=(workitem_uid,),
        )
    )
    return m.AuditMessage(
        event=m.PROCEDURE_RECORD,
        action=action,
        outcome=outcome,
        when=when or _now(),
        types=tuple(types),
        outcome_text=outcome_text,
        participants=(peer.participant(requestor=True), node.participant()),
        source_id=node.audit_source,
        objects=tuple(objects),
    )
