"""An N-EVENT-REPORT receiver (`tdwii ups watch`): UPS event reports as they arrive.

`Watcher(ae_title, ssl_context, on_report)` listens on the same acceptor as
`tdwii serve` (`tdwii_cli.scp`: bounded handshakes, per-host limits, every read
under a deadline; several senders at once), accepts Verification and the UPS Event
SOP Class, answers every N-EVENT-REPORT with Success once `on_report` has the
`Report`, and C-ECHO with Success. Reports are read from their bytes without pydicom.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from tdwii_cli.dicom import rawdataset as raw
from tdwii_cli.dicom import status as st
from tdwii_cli.dicom import tags
from tdwii_cli.dicom.keys import KNOWN
from tdwii_cli.dicom.uids import EXPLICIT_VR_LE, UPS_EVENT, VERIFICATION
from tdwii_cli.net import dimse
from tdwii_cli.scp.acceptor import Acceptor, AcceptorSettings
from tdwii_cli.scp.limits import LimitSettings
from tdwii_cli.scp.messages import Reply, Request
from tdwii_cli.scp.session import SessionSettings
from tdwii_cli.text import one_line
from tdwii_cli.ups.vocabulary import (
    ASSIGNED,
    CANCEL_REQUESTED,
    EVENT_NAMES,
    SCP_STATUS_CHANGE,
    STATE_REPORT,
)

log = logging.getLogger("tdwii.watch")


@dataclass(frozen=True)
class Report:
    """One N-EVENT-REPORT as received."""

    received: datetime
    event_type: int
    uid: str
    sender_ae: str
    peer: str
    state: str = ""
    readiness: str = ""
    progress: str = ""
    description: str = ""
    detail: str = ""  # Cancel Requested: who and why; SCP Status Change: the statuses
    data: bytes = field(default=b"", repr=False)  # the Event Information, Explicit VR LE

    @property
    def event(self) -> str:
        return EVENT_NAMES.get(self.event_type, f"event type {self.event_type}")

    def line(self) -> str:
        """The one-line form `watch` prints (what the sender wrote shown escaped)."""
        percent = f"{self.progress}%" if self.progress else ""
        what = " ".join(x for x in (self.state, percent, self.description) if x)
        parts = [self.received.strftime("%H:%M:%S.%f")[:-3], self.event, self.uid]
        parts += [x for x in (what, self.detail) if x]
        parts.append(f"from {self.sender_ae} ({self.peer})")
        return one_line("  ".join(parts))

    def to_json(self) -> dict[str, Any]:
        return {
            "time": self.received.isoformat(timespec="milliseconds"),
            "event_type": self.event_type,
            "event": self.event,
            "uid": self.uid,
            "state": self.state or None,
            "input_readiness": self.readiness or None,
            "progress": self.progress or None,
            "description": self.description or None,
            "detail": self.detail or None,
            "sender_ae": self.sender_ae,
            "peer": self.peer,
        }


def _text(data: bytes, found: dict[int, raw.RawElement], keyword_or_tag: str | int) -> str:
    tag = KNOWN[keyword_or_tag][0] if isinstance(keyword_or_tag, str) else keyword_or_tag
    return raw.text_of(data, found.get(tag))


def parse_report(request: Request, received: datetime) -> Report:
    """The `Report` an N-EVENT-REPORT-RQ carries (`raw.RawError` if its data set is broken)."""
    data = request.data or b""
    if data and request.transfer_syntax != EXPLICIT_VR_LE:
        from tdwii_cli.dicom import codec

        data = codec.transcode(data, request.transfer_syntax)
    found = raw.scan(data)
    progress = raw.first_item(data, found.get(tags.PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE))
    event_type = request.command.event_type or 0
    detail = ""
    if event_type == CANCEL_REQUESTED:
        who = _text(data, found, "RequestingAE")
        why = _text(data, found, "ReasonForCancellation")
        detail = f"by {who}" + (f": {why}" if why else "") if who else why
    elif event_type == SCP_STATUS_CHANGE:
        detail = " ".join(
            x
            for x in (
                _text(data, found, "SCPStatus"),
                _text(data, found, "SubscriptionListStatus"),
                _text(data, found, "UnifiedProcedureStepListStatus"),
            )
            if x
        )
    elif event_type == STATE_REPORT:
        detail = _text(data, found, "ReasonForCancellation")
    station = raw.first_item(data, found.get(tags.SCHEDULED_STATION_NAME_CODE_SEQUENCE))
    if event_type == ASSIGNED and station:
        detail = "station " + _text(data, station, "CodeValue")
    return Report(
        received=received,
        event_type=event_type,
        uid=request.sop_instance,
        sender_ae=request.calling_ae,
        peer=request.peer.address if request.peer is not None else "",
        state=_text(data, found, tags.PROCEDURE_STEP_STATE),
        readiness=_text(data, found, tags.INPUT_READINESS_STATE),
        progress=raw.text_of(data, progress.get(KNOWN["ProcedureStepProgress"][0])),
        description=raw.text_of(data, progress.get(KNOWN["ProcedureStepProgressDescription"][0])),
        detail=detail,
        data=data,
    )


@dataclass(frozen=True)
class WatchSettings:
    """The receiver's limits and timeouts (seconds)."""

    max_associations: int = 32
    max_associations_per_host: int = 16
    max_pending: int = 128
    max_pending_per_host: int = 16
    handshake_timeout: float = 10.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 30.0
    network_timeout: float = 60.0
    max_pdu: int = 16382
    max_message: int = 4 << 20


class Watcher:
    """See the module docstring; `start(host, port)`, `address`, `stop()`."""

    def __init__(
        self,
        ae_title: str,
        ssl_context: ssl.SSLContext | None,
        on_report: Callable[[Report], None],
        settings: WatchSettings | None = None,
    ) -> None:
        s = settings or WatchSettings()
        self.on_report = on_report
        self.count = 0
        self._lock = threading.Lock()
        self.acceptor = Acceptor(
            AcceptorSettings(
                ae_title=ae_title,
                abstract_syntaxes=(VERIFICATION, UPS_EVENT),
                max_pdu=s.max_pdu,
                handshake_timeout=s.handshake_timeout,
                limits=LimitSettings(
                    max_pending=s.max_pending,
                    max_pending_per_host=s.max_pending_per_host,
                    max_associations=s.max_associations,
                    max_associations_per_host=s.max_associations_per_host,
                ),
                session=SessionSettings(
                    acse_timeout=s.acse_timeout,
                    dimse_timeout=s.dimse_timeout,
                    network_timeout=s.network_timeout,
                    max_pdu=s.max_pdu,
                    max_message=s.max_message,
                ),
            ),
            self.handle,
            ssl_context,
        )

    @property
    def address(self) -> tuple[str, int]:
        return self.acceptor.address

    def start(self, host: str, port: int) -> None:
        """Listen (in the background); `OSError` when the port cannot be had."""
        self.acceptor.start(host, port)

    def stop(self, grace: float = 2.0) -> None:
        self.acceptor.stop(grace)

    def handle(self, request: Request) -> Iterator[Reply]:
        """The acceptor's handler: N-EVENT-REPORT and C-ECHO; anything else is 0211."""
        field_ = request.command.field
        if field_ == dimse.C_ECHO_RQ:
            yield Reply(st.SUCCESS)
            return
        if field_ != dimse.N_EVENT_REPORT_RQ:
            yield Reply(st.UNRECOGNIZED_OPERATION, f"{request.command.name} is not served here")
            return
        try:
            report = parse_report(request, datetime.now())
        except (raw.RawError, ValueError) as exc:
            log.warning("N-EVENT-REPORT from %s: cannot be read: %s", request.calling_ae, exc)
            yield Reply(st.PROCESSING_FAILURE, "the event information cannot be read")
            return
        try:
            with self._lock:  # one report at a time: lines never interleave
                self.count += 1
                self.on_report(report)
        except Exception as exc:  # printing failed (a closed pipe): still answer
            log.warning("cannot show a report: %s", exc)
        yield Reply(st.SUCCESS)
