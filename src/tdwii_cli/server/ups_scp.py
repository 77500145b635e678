"""The worklist manager's DICOM services as one object: Verification and every UPS operation.

`UpsScp` answers C-ECHO, N-CREATE (UPS Push), C-FIND (Query, Pull, Watch),
N-GET, N-SET and N-ACTION (Change State, Request Cancel, Subscribe,
Unsubscribe, Suspend Global Subscription) from `Request`s, whatever acceptor
carried them, and sends the N-EVENT-REPORTs they cause through its
`EventSender`. `start()` and `stop()` are called by the server around serving.

N-CREATE follows PS3.4 CC.2.5 with the rules shared with the client
(`tdwii_cli.ups.ncreate`): the first problem found is answered (with an Error
Comment), a duplicate SOP Instance UID is 0111 (the store's primary key makes
that hold across restarts), missing Type 2 attributes are added empty, and when
the request has no Affected SOP Instance UID the SCP assigns one. Success is
answered only once the workitem is committed.

Every read-check-write runs in one store transaction; event reports are queued
after the commit and sent from the sender's threads, never on the caller's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping
from datetime import timedelta

from pydicom.datadict import dictionary_VR, keyword_for_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from tdwii_cli.access.aefile import KnownAE
from tdwii_cli.access.roles import Operation
from tdwii_cli.audit import events as audit
from tdwii_cli.audit.messages import Code
from tdwii_cli.clock import utc_now
from tdwii_cli.dicom import status as st
from tdwii_cli.dicom import tags
from tdwii_cli.dicom.uids import EXPLICIT_VR_LE, UPS_PULL, UPS_PUSH
from tdwii_cli.dicom.uids import UPS_FILTERED_GLOBAL_SUBSCRIPTION as FILTERED_GLOBAL
from tdwii_cli.dicom.uids import UPS_GLOBAL_SUBSCRIPTION as GLOBAL
from tdwii_cli.dicom.uids import UPS_WELL_KNOWN as WELL_KNOWN
from tdwii_cli.dicom.values import valid_uid
from tdwii_cli.scp.messages import Reply, Request
from tdwii_cli.server.auditing import MINOR_FAILURE, SUCCESS, Auditor
from tdwii_cli.server.authorization import Authorizer
from tdwii_cli.server.eventjournal import EventJournal
from tdwii_cli.server.events import EventSender
from tdwii_cli.server.store import DuplicateWorkitem, WorkitemStore
from tdwii_cli.server.subscriptions import Subscriptions
from tdwii_cli.tls.options import TlsOptions
from tdwii_cli.ups import ncreate, states
from tdwii_cli.ups.matching import Query, QueryError
from tdwii_cli.ups.vocabulary import (
    ASSIGNED,
    CANCEL_REQUESTED,
    CHANGE_STATE,
    PROGRESS_REPORT,
    REQUEST_CANCEL,
    SCP_STATUS_CHANGE,
    STATE_REPORT,
    SUBSCRIBE,
    SUSPEND_GLOBAL,
    UNSUBSCRIBE,
)

log = logging.getLogger("tdwii.ups")
serve_log = logging.getLogger("tdwii.serve")


def _fail(status: int, comment: str) -> Reply:
    return Reply(status, comment)


def _receiving_ae(info: Dataset) -> str:
    """The Receiving AE of a Subscribe, Unsubscribe or Suspend ('' when missing)."""
    return str(info.get("ReceivingAE") or "").strip()


_UIDS_PER_QUERY = 500  # SQLite allows 32766 parameters; a small IN list stays fast

_MISSING_RECEIVING_AE = Reply(st.MISSING_ATTRIBUTE, "Receiving AE is missing")


def _keyword(tag: int) -> str:
    """An attribute's keyword, or its tag when the dictionary has none."""
    return keyword_for_tag(tag) or f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _nset_transaction(state: str, changed: set[int]) -> tuple[Code, ...]:
    """The IHE-RO TDW-II transaction an N-SET of a workitem in `state` is: RO-62 when it
    set only the progress, RO-64 (final update) when it set more (none while SCHEDULED)."""
    if state != states.IN_PROGRESS or not changed:
        return ()
    if changed == {tags.PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE}:
        return (audit.RO_62,)
    return (audit.RO_64,)


def _refused(what: str, decision: states.Decision) -> Reply:
    """Log why the state machine said no to `what` (warnings only at DEBUG); the reply."""
    level = logging.DEBUG if decision.is_warning else logging.INFO
    log.log(level, "%s refused (0x%04X): %s", what, decision.status, decision.comment)
    return _fail(decision.status, decision.comment)


class UpsScp:
    """The Verification and UPS services of one worklist manager, over one store."""

    def __init__(
        self,
        store: WorkitemStore,
        *,
        ae_title: str = "UPSSCP",
        known_aes: Mapping[str, KnownAE] | None = None,
        tls: TlsOptions | None = None,
        retention: float | None = None,
        sender: EventSender | None = None,
        auditor: Auditor | None = None,
        authorizer: Authorizer | None = None,
    ) -> None:
        self.store = store
        self.ae_title = ae_title
        self.known_aes = dict(known_aes or {})
        self.subscriptions = Subscriptions(store)
        self.sender = sender or EventSender(
            ae_title, self.known_aes, tls, journal=EventJournal(store)
        )
        self.retention = retention
        self.audit = auditor or Auditor.disabled()
        self.guard = authorizer or Authorizer(self.known_aes, enforce=False, auditor=self.audit)
        self._stop = threading.Event()
        self._purger: threading.Thread | None = None

    # -- life cycle ----------------------------------------------------------------------

    def set_known_aes(self, known_aes: Mapping[str, KnownAE]) -> None:
        """Use a reread AE configuration (subscribers' addresses, bindings, roles) from now."""
        self.known_aes = dict(known_aes)
        self.sender.known_aes = self.known_aes
        self.guard.reload(self.known_aes)

    def _reachable(self, ae_title: str) -> bool:
        known = self.known_aes.get(ae_title)
        return known is not None and known.reachable

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
        cutoff = utc_now() - timedelta(seconds=self.retention)
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

    def _after_create(self, ds: Dataset) -> None:
        """Subscribe the global subscribers to a new workitem and send them its SCHEDULED
        State Report (and an Assigned report when it names a station or performers)."""
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

    # -- C-ECHO --------------------------------------------------------------------------

    def echo(self, request: Request) -> Reply:
        """Verification: always Success."""
        serve_log.debug("C-ECHO from %s", request.calling_ae)
        return Reply(st.SUCCESS)

    # -- N-CREATE ------------------------------------------------------------------------

    def create(self, request: Request) -> Reply:
        """N-CREATE of a UPS (UPS Push)."""
        caller = request.calling_ae
        refused = self.guard.check(request, Operation.CREATE)
        if refused is not None:
            return refused
        sop_class = request.command.sop_class
        if sop_class != UPS_PUSH:
            serve_log.warning("N-CREATE refused: SOP Class %s is not UPS Push", sop_class)
            return _fail(st.NO_SUCH_SOP_CLASS, "N-CREATE is only defined for UPS Push")
        try:
            ds = request.dataset()
            if ds is None:
                raise ValueError("no attribute list")
            ds.get("ProcedureStepState")  # decoding is lazy: fail here, not later
        except Exception as exc:
            serve_log.warning("N-CREATE refused: the attribute list cannot be decoded: %s", exc)
            return _fail(st.PROCESSING_FAILURE, "attribute list cannot be decoded")

        requested = request.sop_instance
        uid = requested or str(ds.get("SOPInstanceUID") or "").strip() or generate_uid()
        if not valid_uid(uid):
            serve_log.info("N-CREATE refused (0106): invalid SOP Instance UID %r", uid)
            return _fail(st.INVALID_ATTRIBUTE_VALUE, f"invalid SOP Instance UID {uid}")

        problems = ncreate.check_ncreate(ds)
        if problems:
            first = problems[0]
            serve_log.info(
                "N-CREATE %s from %s refused (0x%04X): %s",
                uid,
                caller,
                first.status,
                "; ".join(p.message for p in problems),
            )
            self._audit_create(request, uid, ds, f"0x{first.status:04X}: {first.message}")
            return _fail(first.status, first.message)

        checked = ds
        received = self._as_received(request, checked, uid)
        if received is None:  # something to add or change: encode a fresh copy
            # The check converted the values it read; a data set whose values are still
            # the received bytes is written to the store much faster.
            ds = request.fresh_dataset() or ds
            ncreate.complete_type2(ds)
            if "TransactionUID" in ds:  # present but empty: never stored in the dataset
                del ds.TransactionUID
            ds.SOPClassUID = UPS_PUSH
            ds.SOPInstanceUID = uid
        try:
            self.store.create(ds, index_from=checked, encoded=received)
        except DuplicateWorkitem:
            serve_log.info("N-CREATE %s from %s refused (0x0111): duplicate", uid, caller)
            self._audit_create(request, uid, checked, "0x0111: a workitem with this UID exists")
            return _fail(st.DUPLICATE_SOP_INSTANCE, "a workitem with this SOP Instance UID exists")
        try:
            self._after_create(ds)
        except Exception as exc:  # the workitem is stored: answer Success regardless
            serve_log.warning("after N-CREATE of %s: %s", uid, exc)
        if serve_log.isEnabledFor(logging.INFO):  # its values would be decoded for nothing
            serve_log.info(
                "created workitem %s (patient %s, label %r) for %s",
                uid,
                ds.get("PatientID", ""),
                str(ds.get("ProcedureStepLabel", "")),
                caller,
            )
        self._audit_create(request, uid, checked)
        return Reply(st.SUCCESS, sop_instance="" if requested else uid)

    def _audit_refused(
        self,
        request: Request,
        uid: str,
        ds: Dataset,
        kind: Code,
        decision: states.Decision,
    ) -> None:
        """A Procedure Record of an operation the UPS rules said no to (a warning such as
        B304 is a success: it was already so)."""
        self.audit.workitem(
            request,
            "U",
            uid,
            ds,
            outcome=SUCCESS if decision.is_warning else MINOR_FAILURE,
            text=f"0x{decision.status:04X}: {decision.comment}",
            types=(kind,),
        )

    def _audit_create(self, request: Request, uid: str, ds: Dataset, failed: str = "") -> None:
        self.audit.workitem(
            request,
            "C",
            uid,
            ds,
            outcome=MINOR_FAILURE if failed else SUCCESS,
            text=failed or None,
            types=(audit.N_CREATE,),
            details=(("ProcedureStepState", states.SCHEDULED),) if not failed else (),
        )

    @staticmethod
    def _as_received(request: Request, checked: Dataset, uid: str) -> bytes | None:
        """The attribute list's bytes when they are exactly what the store keeps, else None.

        That is when they are Explicit VR Little Endian and the SCP has nothing to
        add or change: every Type 2 attribute present, no Transaction UID, the SOP
        Class and Instance UIDs present and right. A complete workitem then costs
        no encoding at all.
        """
        try:
            if request.transfer_syntax != EXPLICIT_VR_LE or request.data is None:
                return None
            if "TransactionUID" in checked or ncreate.missing_type2(checked):
                return None
            if checked.get("SOPClassUID") != UPS_PUSH or checked.get("SOPInstanceUID") != uid:
                return None
            return request.data
        except Exception:  # the encoding path decides
            return None

    # -- C-FIND --------------------------------------------------------------------------

    def find(self, request: Request) -> Iterator[Reply]:
        """Stream the matching workitems (pending replies, then Success); honour C-CANCEL."""
        caller = request.calling_ae
        worklist = (audit.RO_58,) if request.command.sop_class == UPS_PULL else ()
        refused = self.guard.check(request, Operation.QUERY)
        if refused is not None:
            self.audit.query(request, outcome=MINOR_FAILURE, text=refused.comment, types=worklist)
            yield refused
            return
        try:
            identifier = request.dataset()
            if identifier is None:
                raise ValueError("no identifier")
            query = Query.from_identifier(identifier)
        except QueryError as exc:
            log.info("C-FIND from %s refused (0xA900): %s", caller, exc)
            self.audit.query(request, outcome=MINOR_FAILURE, text=str(exc), types=worklist)
            yield Reply(st.IDENTIFIER_DOES_NOT_MATCH, str(exc))
            return
        except Exception as exc:
            log.info("C-FIND from %s: identifier cannot be decoded: %s", caller, exc)
            self.audit.query(
                request, outcome=MINOR_FAILURE, text="identifier cannot be decoded", types=worklist
            )
            yield Reply(st.UNABLE_TO_PROCESS)
            return
        self.audit.query(request, types=worklist)
        count = 0
        rows = self.store.select(query.where, query.params)
        try:
            for item in rows:
                if request.cancelled():
                    log.info("C-FIND from %s canceled after %d match(es)", caller, count)
                    yield Reply(st.CANCEL)
                    return
                if not query.post_filter_blob(item.blob):
                    continue
                count += 1
                data = query.response_bytes(item.blob)  # no decoding when the keys allow
                if data is not None:
                    yield Reply(st.PENDING, data=data)
                else:
                    yield Reply(st.PENDING, dataset=query.response(item.dataset))
        finally:
            rows.close()
        log.info("C-FIND from %s: %d match(es)", caller, count)
        yield Reply(st.SUCCESS)

    # -- N-GET ---------------------------------------------------------------------------

    def get(self, request: Request) -> Reply:
        """The requested attributes (all when none are listed), never the Transaction UID;
        C307 for an unknown instance."""
        uid = request.sop_instance
        refused = self.guard.check(request, Operation.READ)
        if refused is not None:
            return refused
        item = self.store.get(uid)
        if item is None:
            return _fail(st.UPS_NO_SUCH_UPS, "no such UPS")
        ds = item.dataset
        self.audit.workitem(request, "R", uid, ds, types=(audit.N_GET,))
        wanted = request.command.attribute_identifiers
        out = Dataset()
        if tags.SPECIFIC_CHARACTER_SET in ds:
            out.add(ds[tags.SPECIFIC_CHARACTER_SET])
        if not wanted:
            for elem in ds:
                if elem.tag != tags.TRANSACTION_UID:
                    out.add(elem)
        else:
            for tag in wanted:
                if tag == tags.TRANSACTION_UID:
                    continue
                if tag in ds:
                    out.add(ds[tag])
                    continue
                try:
                    vr = dictionary_VR(tag)
                except KeyError:
                    continue
                out.add(DataElement(tag, vr, Sequence() if vr == "SQ" else None))
        log.debug("N-GET %s from %s: %d attribute(s)", uid, request.calling_ae, len(out))
        return Reply(st.SUCCESS, dataset=out)

    # -- N-SET ---------------------------------------------------------------------------

    def set(self, request: Request) -> Reply:
        """C307, C300, C301, C310 per `states.check_nset`; sequences replaced whole."""
        uid = request.sop_instance
        caller = request.calling_ae
        try:
            modification = request.dataset()
            if modification is None:
                raise ValueError("no modification list")
            list(modification)
        except Exception as exc:
            log.info("N-SET %s: modification list cannot be decoded: %s", uid, exc)
            return _fail(st.PROCESSING_FAILURE, "modification list cannot be decoded")
        with self.store.transaction():
            item = self.store.get(uid)
            if item is None:
                return _fail(st.UPS_NO_SUCH_UPS, "no such UPS")
            scheduled = item.state == states.SCHEDULED
            refused = self.guard.check(
                request,
                Operation.UPDATE_SCHEDULED if scheduled else Operation.UPDATE_HELD,
                holder=None if scheduled else item.performer_ae,
            )
            if refused is not None:
                return refused
            decision = states.check_nset(item.state, item.transaction_uid, modification)
            if not decision.proceed:
                self._audit_refused(request, uid, item.dataset, audit.N_SET, decision)
                return _refused(f"N-SET {uid} from {caller}", decision)
            ds = item.dataset
            changed = states.apply_nset(ds, modification)
            self.store.update(uid, ds, state=item.state)
        log.info("N-SET %s from %s: %d attribute(s) updated", uid, caller, len(changed))
        self.audit.workitem(
            request,
            "U",
            uid,
            ds,
            types=(audit.N_SET, *_nset_transaction(item.state, changed)),
            details=(
                ("ProcedureStepState", item.state),
                ("AttributesChanged", " ".join(_keyword(tag) for tag in sorted(changed))),
            ),
        )
        if tags.PROCEDURE_STEP_PROGRESS_INFORMATION_SEQUENCE in changed:
            self.notify(uid, PROGRESS_REPORT, states.progress_report(ds))
        if changed & tags.ASSIGNMENT:
            assigned = states.assigned_report(ds)
            if assigned is not None:
                self.notify(uid, ASSIGNED, assigned)
        return Reply(st.SUCCESS)

    # -- N-ACTION ------------------------------------------------------------------------

    def action(self, request: Request) -> Reply:
        """Change State, Request Cancel, Subscribe, Unsubscribe, Suspend Global Subscription."""
        uid = request.sop_instance
        action = request.command.action_type
        try:
            info = request.dataset()
            if info is not None:
                list(info)
        except Exception as exc:
            log.info("N-ACTION %s: action information cannot be decoded: %s", uid, exc)
            return _fail(st.PROCESSING_FAILURE, "action information cannot be decoded")
        info = info if info is not None else Dataset()
        if action == CHANGE_STATE:
            return self.change_state(request, uid, info)
        if action == REQUEST_CANCEL:
            return self.request_cancel(request, uid, info)
        if action == SUBSCRIBE:
            return self.subscribe(request, uid, info)
        if action == UNSUBSCRIBE:
            return self.unsubscribe(request, uid, info)
        if action == SUSPEND_GLOBAL:
            return self.suspend(request, uid, info)
        return _fail(st.NO_SUCH_ACTION, f"no action type {action}")

    def change_state(self, request: Request, uid: str, info: Dataset) -> Reply:
        """Action type 1 (see `states.change_state`); a State Report on every change."""
        caller = request.calling_ae
        if uid in WELL_KNOWN:
            return _fail(st.UPS_NOT_APPROPRIATE, "not a workitem")
        requested = str(info.get("ProcedureStepState") or "").strip().upper()
        given = str(info.get("TransactionUID") or "").strip()
        finishing = requested in (states.COMPLETED, states.CANCELED)
        with self.store.transaction():
            item = self.store.get(uid)
            if item is None:
                return _fail(st.UPS_NO_SUCH_UPS, "no such UPS")
            refused = self.guard.check(
                request,
                Operation.FINISH if finishing else Operation.CLAIM,
                holder=item.performer_ae if finishing else None,
            )
            if refused is not None:
                return refused
            ds = item.dataset
            decision = states.change_state(item.state, item.transaction_uid, requested, given, ds)
            if not decision.proceed:
                self._audit_refused(request, uid, ds, audit.CHANGE_STATE, decision)
                return _refused(f"Change State {uid} -> {requested} by {caller}", decision)
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
        self.audit.workitem(
            request,
            "U",
            uid,
            ds,
            types=(audit.CHANGE_STATE, audit.RO_65 if finishing else audit.RO_60),
            details=(("ProcedureStepState", requested),),
        )
        self.notify(uid, STATE_REPORT, states.state_report(ds))
        return Reply(st.SUCCESS)

    def request_cancel(self, request: Request, uid: str, info: Dataset) -> Reply:
        """Action type 2: SCHEDULED -> CANCELED at once; IN PROGRESS -> Cancel Requested
        to the performer (C312 when it cannot be reached) and the subscribers."""
        caller = request.calling_ae
        if uid in WELL_KNOWN:
            return _fail(st.UPS_NOT_APPROPRIATE, "not a workitem")
        refused = self.guard.check(request, Operation.REQUEST_CANCEL)
        if refused is not None:
            return refused
        details = states.cancellation_info(info)
        with self.store.transaction():
            item = self.store.get(uid)
            if item is None:
                return _fail(st.UPS_NO_SUCH_UPS, "no such UPS")
            decision = states.request_cancel(item.state)
            ds = item.dataset
            if not decision.proceed:
                self._audit_refused(request, uid, ds, audit.REQUEST_CANCEL, decision)
                return _refused(f"Request Cancel {uid} by {caller}", decision)
            performer = item.performer_ae or ""
            if decision.action == "cancel":
                states.cancel(ds, details)
                self.store.update(uid, ds, state=states.CANCELED)
        if decision.action == "cancel":
            log.info("workitem %s is CANCELED (requested by %s)", uid, caller)
            self.audit.workitem(
                request,
                "U",
                uid,
                ds,
                types=(audit.REQUEST_CANCEL,),
                details=(("ProcedureStepState", states.CANCELED),),
            )
            self.notify(uid, STATE_REPORT, states.state_report(ds))
            return Reply(st.SUCCESS)
        if not self._reachable(performer):
            log.info(
                "Request Cancel %s by %s: performer %r cannot be contacted (no address for it "
                "in the AE configuration)",
                uid,
                caller,
                performer,
            )
            self.audit.workitem(
                request,
                "U",
                uid,
                ds,
                outcome=MINOR_FAILURE,
                text=f"0xC312: the performer {performer} cannot be contacted",
                types=(audit.REQUEST_CANCEL,),
            )
            return _fail(st.UPS_PERFORMER_UNREACHABLE, "the performer cannot be contacted")
        report = Dataset()
        report.RequestingAE = caller
        for elem in details:
            report.add(elem)
        sent_to = self.notify(uid, CANCEL_REQUESTED, report, also=(performer,))
        log.info(
            "cancel of %s requested by %s: told %s", uid, caller, ", ".join(sent_to) or "nobody"
        )
        self.audit.workitem(
            request,
            "U",
            uid,
            ds,
            types=(audit.REQUEST_CANCEL,),
            details=(("CancelRequested", f"performer {performer} told"),),
        )
        return Reply(st.SUCCESS)

    def _audited(self, request: Request, kind: Code, info: Dataset, reply: Reply) -> Reply:
        """`reply` to a subscription operation, recorded as a Query: a subscription is a
        standing query, asked for its Receiving AE."""
        failed = not (reply.status == st.SUCCESS or st.is_warning(reply.status))
        self.audit.query(
            request,
            outcome=MINOR_FAILURE if failed else SUCCESS,
            text=f"0x{reply.status:04X}: {reply.comment}" if reply.status else None,
            types=(kind,),
            for_ae=_receiving_ae(info) or None,
        )
        return reply

    def subscribe(self, request: Request, uid: str, info: Dataset) -> Reply:
        """Action type 3 on a workitem, the Global or the Filtered Global instance."""
        return self._audited(request, audit.SUBSCRIBE, info, self._subscribe(request, uid, info))

    def _subscribe(self, request: Request, uid: str, info: Dataset) -> Reply:
        caller = request.calling_ae
        receiving = _receiving_ae(info)
        if not receiving:
            return _MISSING_RECEIVING_AE
        refused = self.guard.check(request, Operation.SUBSCRIBE, receiving=receiving)
        if refused is not None:
            return refused
        if not self._reachable(receiving):
            log.info(
                "Subscribe by %s refused (0xC308): %s is not a known AE with an address",
                caller,
                receiving,
            )
            return _fail(st.UPS_UNKNOWN_RECEIVING_AE, f"{receiving} is unknown to this SCP")
        lock = str(info.get("DeletionLock") or "").strip().upper() == "TRUE"
        status = st.SUCCESS
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
                return _fail(st.INVALID_ATTRIBUTE_VALUE, str(exc))
            if lock:
                status = st.UPS_DELETION_LOCK_NOT_GRANTED
                lock = False
            added = self.subscriptions.subscribe_global(receiving, lock, keys)
        else:
            if self.store.get(uid) is None:
                return _fail(st.UPS_NO_SUCH_UPS, "no such UPS")
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
        self._initial_reports(receiving, added)
        return Reply(status, "deletion lock not granted" if status else "")

    def _initial_reports(self, receiving: str, uids: list[str]) -> None:
        """The initial State Report of each workitem just subscribed to, journaled in one
        commit; those not final are read from the store's index columns, not decoded."""
        if not uids:
            return
        found: dict[str, tuple[str, str]] = {}
        for i in range(0, len(uids), _UIDS_PER_QUERY):  # by primary key, a few at a time
            chunk = uids[i : i + _UIDS_PER_QUERY]
            rows = self.store.query(
                "SELECT uid, state, input_readiness FROM workitems WHERE state IN "
                f"('SCHEDULED', 'IN PROGRESS') AND uid IN ({','.join('?' * len(chunk))})",
                chunk,
            )
            found.update((uid, (state, readiness)) for uid, state, readiness in rows)
        reports = []
        for uid in uids:  # in the order subscribed
            if uid in found:
                info = Dataset()
                info.ProcedureStepState, info.InputReadinessState = found[uid]
                reports.append((uid, info))
                continue
            item = self.store.get(uid)  # a final workitem: its report says why it ended
            if item is not None:
                reports.append((uid, states.state_report(item.dataset)))
        self.sender.submit_many(receiving, STATE_REPORT, reports)

    def unsubscribe(self, request: Request, uid: str, info: Dataset) -> Reply:
        """Action type 4: from one workitem, or (on a global instance) from everything."""
        reply = self._unsubscribe(request, uid, info)
        return self._audited(request, audit.UNSUBSCRIBE, info, reply)

    def _unsubscribe(self, request: Request, uid: str, info: Dataset) -> Reply:
        caller = request.calling_ae
        receiving = _receiving_ae(info)
        if not receiving:
            return _MISSING_RECEIVING_AE
        refused = self.guard.check(request, Operation.UNSUBSCRIBE, receiving=receiving)
        if refused is not None:
            return refused
        if uid not in WELL_KNOWN and self.store.get(uid) is None:
            return _fail(st.UPS_NO_SUCH_UPS, "no such UPS")
        removed = self.subscriptions.unsubscribe(receiving, uid)
        # no more reports about what it left, not even those still queued (PS3.4 CC.2.3.3)
        self.sender.discard(receiving, None if uid in WELL_KNOWN else uid)
        log.info("%s unsubscribed %s from %s (%d subscription(s))", caller, receiving, uid, removed)
        return Reply(st.SUCCESS)

    def suspend(self, request: Request, uid: str, info: Dataset) -> Reply:
        """Action type 5: stop adding new workitems to the AE's global subscription."""
        return self._audited(request, audit.SUSPEND, info, self._suspend(request, uid, info))

    def _suspend(self, request: Request, uid: str, info: Dataset) -> Reply:
        caller = request.calling_ae
        if uid not in WELL_KNOWN:
            return _fail(st.UPS_NOT_APPROPRIATE, "suspend applies to the global subscription")
        receiving = _receiving_ae(info)
        if not receiving:
            return _MISSING_RECEIVING_AE
        refused = self.guard.check(request, Operation.SUSPEND, receiving=receiving)
        if refused is not None:
            return refused
        self.subscriptions.suspend(receiving)
        log.info("%s suspended the global subscription of %s", caller, receiving)
        return Reply(st.SUCCESS)
