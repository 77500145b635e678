"""The UPS service beyond N-CREATE: C-FIND, N-GET, N-SET, N-ACTION, and the event reports.

`build_ups_handlers(ctx)` (registered in `service.HANDLER_BUILDERS`) makes one
`UpsService` for the server: the subscription table, the background
`EventSender`, the retention purge, and the pynetdicom handlers bound to it. It
also hooks N-CREATE (`ctx.extra["after_create"]`) so a new workitem reaches the
global subscribers with its SCHEDULED State Report, and registers its own
shutdown (`ctx.extra["on_stop"]`).

Every read-check-write runs in one store transaction; the event reports are
queued after the commit and sent by the `EventSender` threads, never on the
association's thread.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pynetdicom import evt

from tdwii_cli.ups import states
from tdwii_cli.ups.eventjournal import EventJournal
from tdwii_cli.ups.events import EventSender
from tdwii_cli.ups.matching import Query, QueryError
from tdwii_cli.ups.subscriptions import FILTERED_GLOBAL, GLOBAL, WELL_KNOWN, Subscriptions

log = logging.getLogger("tdwii.ups")

PENDING = 0xFF00
CANCEL = 0xFE00
IDENTIFIER_DOES_NOT_MATCH = 0xA900
UNABLE_TO_PROCESS = 0xC000
PROCESSING_FAILURE = 0x0110
NO_SUCH_ACTION = 0x0123
MISSING_ATTRIBUTE = 0x0120
DELETION_LOCK_NOT_GRANTED = 0xB301
UNKNOWN_RECEIVING_AE = 0xC308
NOT_APPROPRIATE = 0xC314

STATE_REPORT, CANCEL_REQUESTED, PROGRESS_REPORT, SCP_STATUS_CHANGE, ASSIGNED = 1, 2, 3, 4, 5
CHANGE_STATE, REQUEST_CANCEL, SUBSCRIBE, UNSUBSCRIBE, SUSPEND_GLOBAL = 1, 2, 3, 4, 5

TRANSACTION_UID = Tag(0x0008, 0x1195)
SPECIFIC_CHARACTER_SET = Tag(0x0008, 0x0005)
_ASSIGNMENT_TAGS = {
    int(Tag(0x0040, 0x4025)),  # Scheduled Station Name Code Sequence
    int(Tag(0x0040, 0x4026)),  # Scheduled Station Class Code Sequence
    int(Tag(0x0040, 0x4027)),  # Scheduled Station Geographic Location Code Sequence
    int(Tag(0x0040, 0x4034)),  # Scheduled Human Performers Sequence
}
_PROGRESS_TAG = int(Tag(0x0074, 0x1002))  # Procedure Step Progress Information Sequence


def _status(status: int, comment: str = "") -> Dataset:
    ds = Dataset()
    ds.Status = status
    if comment and status != 0:
        ds.ErrorComment = comment[:64]
    return ds


def _calling_ae(event: Any) -> str:
    try:
        return str(event.assoc.requestor.ae_title).strip()
    except Exception:  # pragma: no cover - log text only
        return "?"


def parse_retention(text: str | None) -> float | None:
    """'7d', '12h', '30m', '90s' or a number of seconds -> seconds; None/''/'keep' -> None."""
    if text is None:
        return None
    value = str(text).strip().lower()
    if value in ("", "keep", "forever", "none"):
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    factor = 1
    if value[-1] in units:
        factor = units[value[-1]]
        value = value[:-1]
    try:
        number = float(value)
    except ValueError:
        raise ValueError(
            f"retention {text!r} is not a duration like 30d, 12h, 15m or 90s"
        ) from None
    if number < 0:
        raise ValueError(f"retention {text!r} is negative")
    return number * factor


class UpsService:
    """The UPS Pull / Watch / Query / Event services of one worklist manager."""

    def __init__(
        self,
        store: Any,
        *,
        ae_title: str = "UPSSCP",
        known_aes: dict[str, Any] | None = None,
        tls: Any = None,
        retention: float | None = None,
        sender: EventSender | None = None,
    ) -> None:
        self.store = store
        self.ae_title = ae_title
        self.known_aes = dict(known_aes or {})
        self.subscriptions = Subscriptions(store)
        self.sender = sender or EventSender(
            ae_title, self.known_aes, tls, journal=EventJournal(store)
        )
        self.retention = retention
        self._stop = threading.Event()
        self._purger: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Queue the reports a previous run left, tell subscribers we (re)started, and start
        the retention purge when configured."""
        self.sender.restore()
        for ae_title in self.subscriptions.global_subscribers():
            info = Dataset()
            info.SCPStatus = "RESTARTED"
            info.SubscriptionListStatus = "WARM START"
            info.UnifiedProcedureStepListStatus = "WARM START"
            self.sender.submit(ae_title, SCP_STATUS_CHANGE, GLOBAL, info)
        if self.retention is not None:
            self._purger = threading.Thread(target=self._purge_loop, name="tdwii-retention")
            self._purger.daemon = True
            self._purger.start()

    def stop(self) -> None:
        """Stop purging; give queued event reports a moment to go out."""
        self._stop.set()
        self.sender.stop(timeout=2.0)
        if self._purger is not None:
            self._purger.join(2.0)

    def purge_once(self) -> list[str]:
        """Delete final workitems older than the retention with no Deletion Lock."""
        if self.retention is None:
            return []
        cutoff = datetime.now(timezone.utc) - timedelta(seconds=self.retention)
        uids = self.subscriptions.purge(cutoff.isoformat(timespec="microseconds"))
        if uids:
            log.info("retention: purged %d completed/canceled workitem(s)", len(uids))
        return uids

    def _purge_loop(self) -> None:
        assert self.retention is not None
        interval = min(60.0, max(0.5, self.retention / 10))
        while not self._stop.wait(interval):
            try:
                self.purge_once()
            except Exception as exc:
                log.warning("retention purge failed: %s", exc)

    # -- events --------------------------------------------------------------------------

    def notify(
        self, uid: str, event_type: int, info: Dataset, also: tuple[str, ...] = ()
    ) -> list[str]:
        """Queue one report for every subscriber of `uid` (and `also`); return the AE titles."""
        recipients = sorted(set(self.subscriptions.subscribers(uid)) | set(also))
        for ae_title in recipients:
            self.sender.submit(ae_title, event_type, uid, info)
        return recipients

    def after_create(self, ds: Dataset, event: Any = None) -> None:
        """N-CREATE hook: subscribe global subscribers, send them the SCHEDULED State Report
        (and an Assigned report when the workitem names a station or performers)."""
        recipients = self.subscriptions.on_created(ds)
        if not recipients:
            return
        uid = str(ds.SOPInstanceUID)
        report = states.state_report(ds)
        assigned = states.assigned_report(ds)
        for ae_title in recipients:
            self.sender.submit(ae_title, STATE_REPORT, uid, report)
            if assigned is not None:
                self.sender.submit(ae_title, ASSIGNED, uid, assigned)

    # -- C-FIND --------------------------------------------------------------------------

    def on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        """EVT_C_FIND: stream the matching workitems (pending responses), honour C-CANCEL."""
        try:
            identifier = event.identifier
            query = Query.from_identifier(identifier)
        except QueryError as exc:
            log.info("C-FIND from %s refused (0xA900): %s", _calling_ae(event), exc)
            yield _status(IDENTIFIER_DOES_NOT_MATCH, str(exc)).Status, None
            return
        except Exception as exc:
            log.info("C-FIND from %s: identifier cannot be decoded: %s", _calling_ae(event), exc)
            yield UNABLE_TO_PROCESS, None
            return
        count = 0
        rows = self.store.select(query.where, query.params)
        try:
            for item in rows:
                if event.is_cancelled:
                    log.info(
                        "C-FIND from %s canceled after %d match(es)", _calling_ae(event), count
                    )
                    yield CANCEL, None
                    return
                ds = item.dataset
                if not query.post_filter(ds):
                    continue
                count += 1
                yield PENDING, query.response(ds)
        finally:
            rows.close()
        log.info("C-FIND from %s: %d match(es)", _calling_ae(event), count)

    # -- N-GET ---------------------------------------------------------------------------

    def on_get(self, event: Any) -> tuple[Dataset, Dataset | None]:
        """EVT_N_GET: the requested attributes (all when none are listed), never the
        Transaction UID; C307 for an unknown instance."""
        uid = str(event.request.RequestedSOPInstanceUID or "").strip()
        item = self.store.get(uid)
        if item is None:
            return _status(states.NO_SUCH_UPS, "no such UPS"), None
        ds = item.dataset
        wanted = event.request.AttributeIdentifierList or []
        if isinstance(wanted, int):  # one attribute: pydicom gives a single tag, not a list
            wanted = [wanted]
        out = Dataset()
        if SPECIFIC_CHARACTER_SET in ds:
            out.add(ds[SPECIFIC_CHARACTER_SET])
        if not wanted:
            for elem in ds:
                if elem.tag != TRANSACTION_UID:
                    out.add(elem)
        else:
            for raw in wanted:
                tag = Tag(raw)
                if tag == TRANSACTION_UID:
                    continue
                if tag in ds:
                    out.add(ds[tag])
                    continue
                try:
                    vr = dictionary_VR(tag)
                except KeyError:
                    continue
                out.add(DataElement(tag, vr, Sequence() if vr == "SQ" else None))
        log.debug("N-GET %s from %s: %d attribute(s)", uid, _calling_ae(event), len(out))
        return _status(0), out

    # -- N-SET ---------------------------------------------------------------------------

    def on_set(self, event: Any) -> tuple[Dataset, Dataset | None]:
        """EVT_N_SET: C307, C300, C301, C310 per `states.check_nset`; sequences replaced whole."""
        uid = str(event.request.RequestedSOPInstanceUID or "").strip()
        try:
            modification = event.modification_list
            list(modification)
        except Exception as exc:
            log.info("N-SET %s: modification list cannot be decoded: %s", uid, exc)
            return _status(PROCESSING_FAILURE, "modification list cannot be decoded"), None
        with self.store.transaction():
            item = self.store.get(uid)
            if item is None:
                return _status(states.NO_SUCH_UPS, "no such UPS"), None
            decision = states.check_nset(item.state, item.transaction_uid, modification)
            if not decision.proceed:
                log.info(
                    "N-SET %s from %s refused (0x%04X): %s",
                    uid,
                    _calling_ae(event),
                    decision.status,
                    decision.comment,
                )
                return _status(decision.status, decision.comment), None
            ds = item.dataset
            changed = states.apply_nset(ds, modification)
            self.store.update(uid, ds, state=item.state)
        log.info("N-SET %s from %s: %d attribute(s) updated", uid, _calling_ae(event), len(changed))
        if _PROGRESS_TAG in changed:
            self.notify(uid, PROGRESS_REPORT, states.progress_report(ds))
        if changed & _ASSIGNMENT_TAGS:
            assigned = states.assigned_report(ds)
            if assigned is not None:
                self.notify(uid, ASSIGNED, assigned)
        return _status(0), None

    # -- N-ACTION ------------------------------------------------------------------------

    def on_action(self, event: Any) -> tuple[Dataset, Dataset | None]:
        """EVT_N_ACTION: Change State, Request Cancel, Subscribe, Unsubscribe, Suspend."""
        uid = str(event.request.RequestedSOPInstanceUID or "").strip()
        action = event.action_type
        try:
            info = event.action_information
            if info is not None:
                list(info)
        except Exception as exc:
            log.info("N-ACTION %s: action information cannot be decoded: %s", uid, exc)
            return _status(PROCESSING_FAILURE, "action information cannot be decoded"), None
        info = info if info is not None else Dataset()
        caller = _calling_ae(event)
        if action == CHANGE_STATE:
            return self.change_state(uid, info, caller)
        if action == REQUEST_CANCEL:
            return self.request_cancel(uid, info, caller)
        if action == SUBSCRIBE:
            return self.subscribe(uid, info, caller)
        if action == UNSUBSCRIBE:
            return self.unsubscribe(uid, info, caller)
        if action == SUSPEND_GLOBAL:
            return self.suspend(uid, info, caller)
        return _status(NO_SUCH_ACTION, f"no action type {action}"), None

    def change_state(self, uid: str, info: Dataset, caller: str) -> tuple[Dataset, Dataset | None]:
        """Action type 1 (see `states.change_state`); a State Report on every change."""
        if uid in WELL_KNOWN:
            return _status(NOT_APPROPRIATE, "not a workitem"), None
        requested = str(info.get("ProcedureStepState") or "").strip().upper()
        given = str(info.get("TransactionUID") or "").strip()
        with self.store.transaction():
            item = self.store.get(uid)
            if item is None:
                return _status(states.NO_SUCH_UPS, "no such UPS"), None
            ds = item.dataset
            decision = states.change_state(item.state, item.transaction_uid, requested, given, ds)
            if not decision.proceed:
                level = logging.DEBUG if decision.is_warning else logging.INFO
                log.log(
                    level,
                    "Change State %s -> %s by %s: 0x%04X %s",
                    uid,
                    requested,
                    caller,
                    decision.status,
                    decision.comment,
                )
                return _status(decision.status, decision.comment), None
            if requested == states.IN_PROGRESS:
                ds.ProcedureStepState = states.IN_PROGRESS
                self.store.update(
                    uid, ds, state=requested, transaction_uid=given, performer_ae=caller
                )
            elif requested == states.COMPLETED:
                states.complete(ds)
                self.store.update(uid, ds, state=requested)
            else:
                states.cancel(ds, states.cancellation_info(info))
                self.store.update(uid, ds, state=requested)
        log.info("workitem %s is %s (by %s)", uid, requested, caller)
        self.notify(uid, STATE_REPORT, states.state_report(ds))
        return _status(0), None

    def request_cancel(
        self, uid: str, info: Dataset, caller: str
    ) -> tuple[Dataset, Dataset | None]:
        """Action type 2: SCHEDULED -> CANCELED at once; IN PROGRESS -> Cancel Requested
        to the performer (C312 when it is not a known AE) and the subscribers."""
        if uid in WELL_KNOWN:
            return _status(NOT_APPROPRIATE, "not a workitem"), None
        details = states.cancellation_info(info)
        with self.store.transaction():
            item = self.store.get(uid)
            if item is None:
                return _status(states.NO_SUCH_UPS, "no such UPS"), None
            decision = states.request_cancel(item.state)
            if not decision.proceed:
                log.info(
                    "Request Cancel %s by %s: 0x%04X %s",
                    uid,
                    caller,
                    decision.status,
                    decision.comment,
                )
                return _status(decision.status, decision.comment), None
            ds = item.dataset
            performer = item.performer_ae or ""
            if decision.action == "cancel":
                states.cancel(ds, details)
                self.store.update(uid, ds, state=states.CANCELED)
        if decision.action == "cancel":
            log.info("workitem %s is CANCELED (requested by %s)", uid, caller)
            self.notify(uid, STATE_REPORT, states.state_report(ds))
            return _status(0), None
        if performer not in self.known_aes:
            log.info(
                "Request Cancel %s by %s: performer %r cannot be contacted (not in the AE "
                "configuration)",
                uid,
                caller,
                performer,
            )
            return _status(states.PERFORMER_UNREACHABLE, "the performer cannot be contacted"), None
        report = Dataset()
        report.RequestingAE = caller
        for elem in details:
            report.add(elem)
        sent_to = self.notify(uid, CANCEL_REQUESTED, report, also=(performer,))
        log.info(
            "cancel of %s requested by %s: told %s", uid, caller, ", ".join(sent_to) or "nobody"
        )
        return _status(0), None

    def subscribe(self, uid: str, info: Dataset, caller: str) -> tuple[Dataset, Dataset | None]:
        """Action type 3 on a workitem, the Global or the Filtered Global instance."""
        receiving = str(info.get("ReceivingAE") or "").strip()
        if not receiving:
            return _status(MISSING_ATTRIBUTE, "Receiving AE is missing"), None
        if receiving not in self.known_aes:
            log.info("Subscribe by %s refused (0xC308): %s is not a known AE", caller, receiving)
            return _status(UNKNOWN_RECEIVING_AE, f"{receiving} is unknown to this SCP"), None
        lock = str(info.get("DeletionLock") or "").strip().upper() == "TRUE"
        status = 0
        if uid == GLOBAL:
            added = self.subscriptions.subscribe_global(receiving, lock)
        elif uid == FILTERED_GLOBAL:
            keys = Dataset()
            for elem in info:
                if elem.keyword not in ("ReceivingAE", "DeletionLock") and elem.tag.element:
                    keys.add(elem)
            try:
                Query.from_identifier(keys)
            except QueryError as exc:
                return _status(states.INVALID_ATTRIBUTE_VALUE, str(exc)), None
            if lock:
                status = DELETION_LOCK_NOT_GRANTED
                lock = False
            added = self.subscriptions.subscribe_global(receiving, lock, keys)
        else:
            item = self.store.get(uid)
            if item is None:
                return _status(states.NO_SUCH_UPS, "no such UPS"), None
            self.subscriptions.subscribe_instance(receiving, uid, lock)
            added = [uid]
        log.info(
            "%s subscribed %s to %s%s: %d workitem(s) now",
            caller,
            receiving,
            {GLOBAL: "all workitems", FILTERED_GLOBAL: "matching workitems"}.get(uid, uid),
            " with deletion lock" if lock else "",
            len(added),
        )
        for workitem_uid in added:  # the initial State Reports
            item = self.store.get(workitem_uid)
            if item is not None:
                self.sender.submit(
                    receiving, STATE_REPORT, workitem_uid, states.state_report(item.dataset)
                )
        return _status(status, "deletion lock not granted" if status else ""), None

    def unsubscribe(self, uid: str, info: Dataset, caller: str) -> tuple[Dataset, Dataset | None]:
        """Action type 4: from one workitem, or (on a global instance) from everything."""
        receiving = str(info.get("ReceivingAE") or "").strip()
        if not receiving:
            return _status(MISSING_ATTRIBUTE, "Receiving AE is missing"), None
        if uid not in WELL_KNOWN and self.store.get(uid) is None:
            return _status(states.NO_SUCH_UPS, "no such UPS"), None
        removed = self.subscriptions.unsubscribe(receiving, uid)
        # no more reports about what it left, not even those still queued (PS3.4 CC.2.3.3)
        self.sender.discard(receiving, None if uid in WELL_KNOWN else uid)
        log.info("%s unsubscribed %s from %s (%d subscription(s))", caller, receiving, uid, removed)
        return _status(0), None

    def suspend(self, uid: str, info: Dataset, caller: str) -> tuple[Dataset, Dataset | None]:
        """Action type 5: stop adding new workitems to the AE's global subscription."""
        if uid not in WELL_KNOWN:
            return _status(NOT_APPROPRIATE, "suspend applies to the global subscription"), None
        receiving = str(info.get("ReceivingAE") or "").strip()
        if not receiving:
            return _status(MISSING_ATTRIBUTE, "Receiving AE is missing"), None
        self.subscriptions.suspend(receiving)
        log.info("%s suspended the global subscription of %s", caller, receiving)
        return _status(0), None

    # -- pynetdicom ------------------------------------------------------------------------

    def handlers(self) -> list[tuple[Any, Any]]:
        """The `(event, handler)` pairs for pynetdicom."""
        return [
            (evt.EVT_C_FIND, self.on_find),
            (evt.EVT_N_GET, self.on_get),
            (evt.EVT_N_SET, self.on_set),
            (evt.EVT_N_ACTION, self.on_action),
        ]


def build_ups_handlers(ctx: Any) -> list[tuple[Any, Any]]:
    """Make and start the `UpsService` for `ctx` (a `service.ServiceContext`); its handlers.

    Reads the server's TLS options from `ctx.extra["tls_options"]` and the
    retention (seconds or None) from `ctx.config.retention`; adds the N-CREATE
    hook to `ctx.extra["after_create"]` and its shutdown to `ctx.extra["on_stop"]`.
    """
    retention = ctx.extra.get("retention", getattr(ctx.config, "retention", None))
    if isinstance(retention, str):
        retention = parse_retention(retention)
    service = UpsService(
        ctx.store,
        ae_title=ctx.ae_title,
        known_aes=ctx.known_aes,
        tls=ctx.extra.get("tls_options"),
        retention=retention,
    )
    ctx.extra["ups_service"] = service
    ctx.extra.setdefault("after_create", []).append(service.after_create)
    ctx.extra.setdefault("on_stop", []).append(service.stop)
    service.start()
    return service.handlers()
