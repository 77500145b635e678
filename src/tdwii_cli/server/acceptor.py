"""The acceptor on pynetdicom: the AE and its contexts, DIMSE events in, `UpsScp` answers out.

`build_ae(config)` makes pynetdicom's AE (Verification and the five UPS SOP
Classes as SCP, Explicit VR Little Endian preferred); `handlers(scp)` lists the
`(event, handler)` pairs that turn each pynetdicom DIMSE event into a `Request`
for `scp` and its `Reply` into what pynetdicom sends, plus the connection log's
association and DIMSE lines (from `-v`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, evt
from pynetdicom.events import EventHandlerType

from tdwii_cli.dicom import status as st
from tdwii_cli.dicom.uids import EXPLICIT_VR_LE, UPS_SOP_CLASSES, VERIFICATION
from tdwii_cli.net import dimse
from tdwii_cli.net import log as netlog
from tdwii_cli.net.dimse import Command
from tdwii_cli.net.sockets import format_peer
from tdwii_cli.server.config import ServeConfig
from tdwii_cli.server.messages import Reply, Request
from tdwii_cli.server.transport import peer_identity
from tdwii_cli.server.ups_scp import UpsScp

Handler = EventHandlerType

# pynetdicom accepts the first of these that the requestor proposes: Explicit VR Little
# Endian first, the encoding the store keeps (nothing to convert, no dictionary lookups).
ACCEPTED_TRANSFER_SYNTAXES = [
    EXPLICIT_VR_LE,
    *(str(ts) for ts in DEFAULT_TRANSFER_SYNTAXES if ts != EXPLICIT_VR_LE),
]


def build_ae(config: ServeConfig) -> AE:
    """The acceptor AE: Verification and UPS Push/Watch/Pull/Event/Query as SCP."""
    ae = AE(ae_title=config.ae_title)
    for uid in (VERIFICATION, *UPS_SOP_CLASSES):
        ae.add_supported_context(uid, ACCEPTED_TRANSFER_SYNTAXES)
    ae.maximum_pdu_size = config.max_pdu
    ae.acse_timeout = config.acse_timeout
    ae.dimse_timeout = config.dimse_timeout
    ae.network_timeout = config.network_timeout
    ae.maximum_associations = config.max_associations
    return ae


# -- DIMSE events -> Requests -> Replies ---------------------------------------------------


def _text(value: Any) -> str:
    return str(value or "").strip()


def _tags(value: Any) -> tuple[int, ...]:
    """pynetdicom's Attribute Identifier List: None, one tag, or a list of tags."""
    if value is None:
        return ()
    if isinstance(value, int):  # one attribute: a single tag, not a list
        return (int(value),)
    return tuple(int(tag) for tag in value)


def _request(event: Any, field: int, data: str | None = None) -> Request:
    """The `Request` for a pynetdicom DIMSE event (`data`: the primitive's data set field)."""
    req = event.request
    stream = getattr(req, data) if data is not None else None
    command = Command(
        field=field,
        message_id=int(req.MessageID),
        sop_class=_text(
            getattr(req, "AffectedSOPClassUID", None) or getattr(req, "RequestedSOPClassUID", None)
        ),
        sop_instance=_text(
            getattr(req, "AffectedSOPInstanceUID", None)
            or getattr(req, "RequestedSOPInstanceUID", None)
        ),
        has_dataset=stream is not None,
        action_type=getattr(req, "ActionTypeID", None),
        attribute_identifiers=_tags(getattr(req, "AttributeIdentifierList", None)),
    )
    return Request(
        command=command,
        data=stream.getvalue() if stream is not None else None,
        transfer_syntax=str(event.context.transfer_syntax),
        calling_ae=_calling_ae(event),
        peer=peer_identity(event.assoc),
        cancelled=lambda: bool(event.is_cancelled),
    )


def _calling_ae(event: Any) -> str:
    try:
        return str(event.assoc.requestor.ae_title).strip()
    except Exception:  # pragma: no cover - log text only
        return "?"


def _status(reply: Reply) -> Dataset:
    """The status data set pynetdicom puts in the response (with a truncated Error Comment)."""
    ds = Dataset()
    ds.Status = reply.status
    if reply.comment and reply.status != st.SUCCESS:
        ds.ErrorComment = reply.comment[: dimse.MAX_ERROR_COMMENT]
    return ds


def handlers(scp: UpsScp) -> list[Handler]:
    """The `(event, handler)` pairs for pynetdicom that serve `scp` (and log at `-v`)."""

    def on_echo(event: Any) -> int:
        return scp.echo(_request(event, dimse.C_ECHO_RQ)).status

    def on_create(event: Any) -> tuple[Dataset, Dataset | None]:
        reply = scp.create(_request(event, dimse.N_CREATE_RQ, "AttributeList"))
        if reply.status != st.SUCCESS:
            return _status(reply), None
        attributes = Dataset()
        if reply.sop_instance:  # pynetdicom moves it into the response's Affected SOP Instance
            attributes.AffectedSOPInstanceUID = reply.sop_instance
        return _status(reply), attributes

    def on_find(event: Any) -> Iterator[tuple[Dataset | int, Dataset | None]]:
        for reply in scp.find(_request(event, dimse.C_FIND_RQ, "Identifier")):
            if reply.status == st.SUCCESS:
                return  # pynetdicom sends the final Success itself
            if st.is_pending(reply.status):
                yield reply.status, reply.dataset
            else:
                yield _status(reply), None
                return

    def on_get(event: Any) -> tuple[Dataset, Dataset | None]:
        reply = scp.get(_request(event, dimse.N_GET_RQ))
        return _status(reply), reply.dataset

    def on_set(event: Any) -> tuple[Dataset, Dataset | None]:
        return _status(scp.set(_request(event, dimse.N_SET_RQ, "ModificationList"))), None

    def on_action(event: Any) -> tuple[Dataset, Dataset | None]:
        return _status(scp.action(_request(event, dimse.N_ACTION_RQ, "ActionInformation"))), None

    return [
        *log_handlers(),
        (evt.EVT_C_ECHO, on_echo),
        (evt.EVT_N_CREATE, on_create),
        (evt.EVT_C_FIND, on_find),
        (evt.EVT_N_GET, on_get),
        (evt.EVT_N_SET, on_set),
        (evt.EVT_N_ACTION, on_action),
    ]


# -- the connection log from pynetdicom's events ------------------------------------------


def _who(assoc: Any) -> str:
    remote = assoc.remote
    return format_peer((remote.get("address", "?"), remote.get("port", "?")))


def _on_accepted(event: Any) -> None:
    assoc = event.assoc
    req, acc = assoc.requestor, assoc.acceptor
    netlog.association_accepted(
        _who(assoc),
        str(req.ae_title),
        str(acc.ae_title),
        req.maximum_length,
        [
            (str(cx.abstract_syntax), str(cx.transfer_syntax[0]) if cx.transfer_syntax else "")
            for cx in assoc.accepted_contexts
        ],
        [(str(cx.abstract_syntax), str(cx.status or "")) for cx in assoc.rejected_contexts],
    )


def _on_rejected(event: Any) -> None:
    prim = event.assoc.acceptor.primitive
    detail = ""
    if prim is not None and getattr(prim, "result_str", None):
        detail = f"{prim.result_str}, {prim.source_str}, {prim.reason_str}"
    netlog.association_rejected(_who(event.assoc), detail)


def _on_released(event: Any) -> None:
    netlog.association_released(_who(event.assoc))


def _on_aborted(event: Any) -> None:
    netlog.association_aborted(_who(event.assoc))


_FIELDS = {name.replace("-", "_"): field for field, name in dimse.NAMES.items()}
_started: dict[tuple[int, int], float] = {}
_started_lock = threading.Lock()


def _command(message: Any) -> Command:
    """The fields of a pynetdicom DIMSE message that the log shows."""
    cmd = message.command_set
    field = _FIELDS.get(type(message).__name__, 0)
    uid = cmd.get("AffectedSOPInstanceUID", None) or cmd.get("RequestedSOPInstanceUID", None)
    status = cmd.get("Status", None)
    return Command(
        field=field,
        message_id=cmd.get("MessageID", None),
        responding_to=cmd.get("MessageIDBeingRespondedTo", None),
        sop_instance=str(uid or ""),
        status=int(status) if status is not None else None,
    )


def _message(event: Any, direction: str) -> None:
    command = _command(event.message)
    key_assoc = id(event.assoc)
    took = None
    if command.field and not command.is_response and command.field != dimse.C_CANCEL_RQ:
        with _started_lock:  # a request: remember when it went or came
            _started[(key_assoc, int(command.message_id or 0))] = time.perf_counter()
    elif command.is_response:
        with _started_lock:
            started = _started.pop((key_assoc, int(command.responding_to or 0)), None)
        if started is not None:
            took = (time.perf_counter() - started) * 1000
    netlog.dimse_line(_who(event.assoc), direction, command, took)


def _on_sent(event: Any) -> None:
    _message(event, "sent")


def _on_recv(event: Any) -> None:
    _message(event, "received")


def log_handlers() -> list[Handler]:
    """pynetdicom event handlers for the association and DIMSE lines (none below -v)."""
    if not netlog.log.isEnabledFor(logging.INFO):
        return []
    return [
        (evt.EVT_ACCEPTED, _on_accepted),
        (evt.EVT_REJECTED, _on_rejected),
        (evt.EVT_RELEASED, _on_released),
        (evt.EVT_ABORTED, _on_aborted),
        (evt.EVT_DIMSE_SENT, _on_sent),
        (evt.EVT_DIMSE_RECV, _on_recv),
    ]
