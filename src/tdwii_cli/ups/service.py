"""The worklist manager's DICOM services: the AE, its presentation contexts and event handlers.

`build_ae(...)` makes the pynetdicom AE (Verification and the five UPS SOP
Classes as SCP, the usual uncompressed transfer syntaxes); `build_handlers(ctx)`
lists the `(event, handler)` pairs, each handler closing over one
`ServiceContext` (the store, the configuration, the logger). Handlers for the
other UPS operations (C-FIND, N-GET, N-SET, N-ACTION, events) are added by
appending a builder to `HANDLER_BUILDERS`: a function `ServiceContext -> list`.

N-CREATE follows PS3.4 CC.2.5 with the rules shared with the client
(`tdwii_cli.ups.ncreate`): the first problem found is answered (with an Error
Comment), a duplicate SOP Instance UID is 0111 (the store's primary key makes
that hold across restarts), missing Type 2 attributes are added empty, and
when the request has no Affected SOP Instance UID the server assigns one.
Success is sent only after the workitem is committed to disk.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, DEFAULT_TRANSFER_SYNTAXES, evt
from pynetdicom.dsutils import decode

from tdwii_cli.ups import ncreate
from tdwii_cli.ups.store import DuplicateWorkitem, WorkitemStore

VERIFICATION = "1.2.840.10008.1.1"
UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
UPS_WATCH = "1.2.840.10008.5.1.4.34.6.2"
UPS_PULL = "1.2.840.10008.5.1.4.34.6.3"
UPS_EVENT = "1.2.840.10008.5.1.4.34.6.4"
UPS_QUERY = "1.2.840.10008.5.1.4.34.6.5"
UPS_SOP_CLASSES = (UPS_PUSH, UPS_WATCH, UPS_PULL, UPS_EVENT, UPS_QUERY)
SCP_SOP_CLASSES = (VERIFICATION, *UPS_SOP_CLASSES)
# pynetdicom accepts the first of these that the requestor proposes: Explicit VR Little
# Endian first, the encoding the store keeps (nothing to convert, no dictionary lookups).
ACCEPTED_TRANSFER_SYNTAXES = [
    ExplicitVRLittleEndian,
    *(ts for ts in DEFAULT_TRANSFER_SYNTAXES if ts != ExplicitVRLittleEndian),
]

PROCESSING_FAILURE = 0x0110
NO_SUCH_SOP_CLASS = 0x0118

_UID = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")

log = logging.getLogger("tdwii.serve")

Handler = tuple[Any, Callable[..., Any]]


@dataclass
class ServiceContext:
    """What every handler may use: the store, the configuration and the logger.

    `config` is the effective `tdwii_cli.serveconfig.ServeConfig` (may be None
    in tests); `known_aes` maps AE titles to `serveconfig.KnownAE` (subscribers
    to reach with N-EVENT-REPORT); `extra` is free room for other services.
    """

    store: WorkitemStore
    ae_title: str = "UPSSCP"
    config: Any = None
    known_aes: dict[str, Any] = field(default_factory=dict)
    log: logging.Logger = log
    extra: dict[str, Any] = field(default_factory=dict)


def build_ae(
    ae_title: str = "UPSSCP",
    *,
    max_pdu: int = 16382,
    acse_timeout: float | None = 30,
    dimse_timeout: float | None = 30,
    network_timeout: float | None = 60,
    max_associations: int = 10,
) -> AE:
    """The acceptor AE: Verification and UPS Push/Watch/Pull/Event/Query as SCP."""
    ae = AE(ae_title=ae_title)
    for uid in SCP_SOP_CLASSES:
        ae.add_supported_context(uid, ACCEPTED_TRANSFER_SYNTAXES)
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = acse_timeout
    ae.dimse_timeout = dimse_timeout
    ae.network_timeout = network_timeout
    ae.maximum_associations = max_associations
    return ae


def _status(status: int, comment: str = "") -> Dataset:
    """A status dataset for a handler's response, with a (truncated) Error Comment."""
    ds = Dataset()
    ds.Status = status
    if comment and status != ncreate.SUCCESS:
        ds.ErrorComment = comment[:64]
    return ds


def _peer(event: Any) -> str:
    try:
        return str(event.assoc.requestor.ae_title).strip()
    except Exception:  # pragma: no cover - defensive, for log text only
        return "?"


def _pristine(event: Any) -> Dataset | None:
    """The request's attribute list decoded afresh (None if that fails).

    The check converted the values it read; a dataset whose values are still
    the received bytes is written to the store about three times faster.
    """
    try:
        syntax = event.context.transfer_syntax
        stream = event.request.AttributeList
        return decode(stream, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    except Exception:  # the checked copy is used instead
        return None


def _as_received(event: Any, checked: Dataset, uid: str) -> bytes | None:
    """The attribute list's bytes when they are exactly what the store keeps, else None.

    That is when they are Explicit VR Little Endian and the SCP has nothing to
    add or change: every Type 2 attribute present, no Transaction UID, the SOP
    Class and Instance UIDs present and right. A complete workitem then costs
    no encoding at all.
    """
    try:
        if event.context.transfer_syntax != ExplicitVRLittleEndian:
            return None
        if "TransactionUID" in checked or ncreate.missing_type2(checked):
            return None
        if checked.get("SOPClassUID") != UPS_PUSH or checked.get("SOPInstanceUID") != uid:
            return None
        return bytes(event.request.AttributeList.getvalue())
    except Exception:  # the encoding path decides
        return None


def handle_n_create(event: Any, ctx: ServiceContext) -> tuple[Dataset, Dataset | None]:
    """EVT_N_CREATE: create a UPS (status dataset, attribute list to return)."""
    req = event.request
    sop_class = str(req.AffectedSOPClassUID or "")
    if sop_class != UPS_PUSH:
        ctx.log.warning("N-CREATE refused: SOP Class %s is not UPS Push", sop_class)
        return _status(NO_SUCH_SOP_CLASS, "N-CREATE is only defined for UPS Push"), None
    try:
        ds = event.attribute_list
        ds.get("ProcedureStepState")  # decoding is lazy: fail here, not later
    except Exception as exc:
        ctx.log.warning("N-CREATE refused: the attribute list cannot be decoded: %s", exc)
        return _status(PROCESSING_FAILURE, "attribute list cannot be decoded"), None

    requested = str(req.AffectedSOPInstanceUID or "").strip()
    uid = requested or str(ds.get("SOPInstanceUID") or "").strip() or generate_uid()
    if len(uid) > 64 or not _UID.match(uid):
        ctx.log.info("N-CREATE refused (0106): invalid SOP Instance UID %r", uid)
        return _status(ncreate.INVALID_ATTRIBUTE_VALUE, f"invalid SOP Instance UID {uid}"), None

    problems = ncreate.check_ncreate(ds)
    if problems:
        first = problems[0]
        ctx.log.info(
            "N-CREATE %s from %s refused (0x%04X): %s",
            uid,
            _peer(event),
            first.status,
            "; ".join(p.message for p in problems),
        )
        return _status(first.status, first.message), None

    checked = ds
    received = _as_received(event, checked, uid)
    if received is None:  # something to add or change: encode a fresh copy
        ds = _pristine(event) or ds
        ncreate.complete_type2(ds)
        if "TransactionUID" in ds:  # present but empty: never stored in the dataset
            del ds.TransactionUID
        ds.SOPClassUID = UPS_PUSH
        ds.SOPInstanceUID = uid
    try:
        ctx.store.create(ds, index_from=checked, encoded=received)
    except DuplicateWorkitem:
        ctx.log.info("N-CREATE %s from %s refused (0x0111): duplicate", uid, _peer(event))
        return _status(
            ncreate.DUPLICATE_SOP_INSTANCE, "a workitem with this SOP Instance UID exists"
        ), None
    for hook in ctx.extra.get("after_create", ()):  # e.g. the SCHEDULED State Report
        try:
            hook(ds, event)
        except Exception as exc:  # the workitem is stored: answer Success regardless
            ctx.log.warning("after N-CREATE of %s: %s", uid, exc)
    ctx.log.info(
        "created workitem %s (patient %s, label %r) for %s",
        uid,
        ds.get("PatientID", ""),
        str(ds.get("ProcedureStepLabel", "")),
        _peer(event),
    )
    reply = Dataset()
    if not requested:
        # pynetdicom moves this into the response's Affected SOP Instance UID.
        reply.AffectedSOPInstanceUID = uid
    return _status(ncreate.SUCCESS), reply


def handle_c_echo(event: Any, ctx: ServiceContext) -> int:
    """EVT_C_ECHO: Verification, always Success."""
    ctx.log.debug("C-ECHO from %s", _peer(event))
    return 0x0000


def _core_handlers(ctx: ServiceContext) -> list[Handler]:
    return [
        (evt.EVT_C_ECHO, lambda event: handle_c_echo(event, ctx)),
        (evt.EVT_N_CREATE, lambda event: handle_n_create(event, ctx)),
    ]


def _log_handlers(ctx: ServiceContext) -> list[Handler]:
    """The shared log's association and DIMSE lines (tdwii_cli.netlog)."""
    from tdwii_cli import netlog

    return list(netlog.association_handlers())


def _ups_handlers(ctx: ServiceContext) -> list[Handler]:
    """C-FIND, N-GET, N-SET, N-ACTION and the event reports (tdwii_cli.ups.handlers)."""
    from tdwii_cli.ups.handlers import build_ups_handlers

    return build_ups_handlers(ctx)


HANDLER_BUILDERS: list[Callable[[ServiceContext], list[Handler]]] = [
    _log_handlers,
    _core_handlers,
    _ups_handlers,
]
"""Each returns `(event, handler)` pairs for one concern; later entries add more services."""


def build_handlers(ctx: ServiceContext) -> list[Handler]:
    """Every `(event, handler)` pair of the worklist manager, bound to `ctx`."""
    handlers: list[Handler] = []
    for builder in HANDLER_BUILDERS:
        handlers.extend(builder(ctx))
    return handlers
