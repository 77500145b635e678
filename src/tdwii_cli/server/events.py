"""N-EVENT-REPORT delivery to UPS subscribers, off the DIMSE path.

`EventSender.submit(...)` only appends to a queue and returns: the DIMSE answer
that caused the event is never delayed by a subscriber. One worker thread per
subscriber AE title takes its queue in order, opens one association (UPS Event
SOP Class) to the address from `--ae-config`, over mutual TLS when the entry
says `"mTLS": true` (presenting the server's own node certificate and checking
the subscriber's against the server's CA), sends every queued report, and
releases. When the subscriber cannot be reached or aborts, the worker waits
(back-off doubling from `retry_base` up to `retry_max` seconds) and tries again;
after `max_attempts` failed tries in a row the queued reports are dropped with a
warning, so a subscriber that is gone for good costs a bounded amount of memory.

With a `journal` (the store's `event_queue` table), every queued report is also
written to disk and deleted once answered or dropped; `restore()` queues again
what a previous run left, so a restart of the server loses no report.

Every delivery, retry and drop is logged on `tdwii.events`.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from pydicom.dataset import Dataset

from tdwii_cli.access.aefile import KnownAE
from tdwii_cli.dicom import codec
from tdwii_cli.dicom.uids import TRANSFER_SYNTAXES, UPS_EVENT, UPS_PUSH
from tdwii_cli.errors import TdwiiError
from tdwii_cli.net.association import Association, open_association, propose
from tdwii_cli.net.dimse import N_EVENT_REPORT_RQ, Command
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.server.eventjournal import EventJournal
from tdwii_cli.tls.options import TlsOptions
from tdwii_cli.ups.vocabulary import EVENT_NAMES

log = logging.getLogger("tdwii.events")


@dataclass
class EventReport:
    """One N-EVENT-REPORT waiting for its subscriber."""

    ae_title: str
    event_type: int
    uid: str
    info: Dataset
    queued_at: float = field(default_factory=time.monotonic)
    journal_id: int | None = None  # its row in the store's event journal, if any

    def describe(self) -> str:
        return f"{EVENT_NAMES.get(self.event_type, self.event_type)} for {self.uid}"


@dataclass
class Delivery:
    """A delivered report, kept in `EventSender.delivered` (most recent last, bounded)."""

    ae_title: str
    event_type: int
    uid: str
    status: int
    latency: float


class _Worker:
    """One subscriber's queue and thread."""

    def __init__(self, sender: EventSender, ae_title: str) -> None:
        self.sender = sender
        self.ae_title = ae_title
        self.queue: deque[EventReport] = deque()
        self.cond = threading.Condition()
        self.failures = 0
        self.busy = False
        self.thread = threading.Thread(
            target=self._run, name=f"tdwii-events-{ae_title}", daemon=True
        )
        self.thread.start()

    def put(self, report: EventReport) -> None:
        with self.cond:
            if len(self.queue) >= self.sender.max_queue:
                dropped = self.queue.popleft()
                self.sender.forget([dropped])
                log.warning(
                    "event queue for %s full (%d): dropped %s",
                    self.ae_title,
                    self.sender.max_queue,
                    dropped.describe(),
                )
            self.queue.append(report)
            self.cond.notify()

    def _drop_all(self) -> list[EventReport]:
        """Give up every queued report (and forget it in the journal); what was dropped."""
        with self.cond:
            dropped = list(self.queue)
            self.queue.clear()
        self.sender.forget(dropped)
        return dropped

    def idle(self) -> bool:
        with self.cond:
            return not self.queue and not self.busy

    def _run(self) -> None:
        sender = self.sender
        while True:
            with self.cond:
                while not self.queue and not sender.stopping.is_set():
                    self.cond.wait(0.5)
                if not self.queue and sender.stopping.is_set():
                    return
                self.busy = True
            try:
                ok = self._deliver()
            except Exception as exc:  # never let the thread die
                log.exception("event delivery to %s failed: %s", self.ae_title, exc)
                ok = False
            with self.cond:
                self.busy = False
            if ok:
                self.failures = 0
                continue
            self.failures += 1
            if self.failures >= sender.max_attempts:
                dropped = self._drop_all()
                log.warning(
                    "dropped %d event report(s) for %s after %d failed attempts",
                    len(dropped),
                    self.ae_title,
                    self.failures,
                )
                self.failures = 0
                continue
            delay = min(sender.retry_max, sender.retry_base * 2 ** (self.failures - 1))
            log.info("retrying event reports to %s in %.1f s", self.ae_title, delay)
            if sender.stopping.wait(delay) and sender.stop_deadline < time.monotonic():
                return

    def _deliver(self) -> bool:
        """Send what is queued over one association; False when it must be retried."""
        sender = self.sender
        known = sender.known_aes.get(self.ae_title)
        if known is None or not known.reachable:
            dropped = self._drop_all()
            log.warning(
                "cannot send %d event report(s) to %s: %s",
                len(dropped),
                self.ae_title,
                "not in the AE configuration"
                if known is None
                else "no IPAddr/Port for it in the AE configuration",
            )
            return True
        try:
            with sender.associate(known) as assoc:
                self._send_queued(assoc)
            return True
        except TdwiiError as exc:  # NetError, or no certificate for an mTLS subscriber
            log.warning(
                "event reports to %s (%s:%s%s) not delivered: %s",
                self.ae_title,
                known.address,
                known.port,
                ", mTLS" if known.mtls else "",
                exc.message,
            )
            return False

    def _send_queued(self, assoc: Association) -> None:
        """Send the queued reports in order over `assoc`, each dropped once answered."""
        sender = self.sender
        context = assoc.context(UPS_EVENT)
        while True:
            with self.cond:
                if not self.queue:
                    return
                report = self.queue[0]
            request = Command(
                N_EVENT_REPORT_RQ,
                message_id=assoc.next_message_id(),
                sop_class=UPS_PUSH,  # the instance's SOP Class, on the UPS Event context
                sop_instance=report.uid,
                event_type=report.event_type,
                has_dataset=True,
            )
            data = codec.encode(report.info, context.transfer_syntax)
            status = next(assoc.request(request, data, context)).command.status
            assert status is not None  # Association.response checks it
            with self.cond:
                if self.queue and self.queue[0] is report:
                    self.queue.popleft()
            sender.forget([report])
            latency = time.monotonic() - report.queued_at
            sender.record(Delivery(self.ae_title, report.event_type, report.uid, status, latency))
            level = logging.INFO if status == 0 else logging.WARNING
            log.log(
                level,
                "sent %s to %s: status 0x%04X (%.0f ms after the change)",
                report.describe(),
                self.ae_title,
                status,
                latency * 1000,
            )


class EventSender:
    """Queues N-EVENT-REPORTs per subscriber and delivers them from background threads.

    `known_aes`: AE title -> `KnownAE` (address, port, mTLS).
    `tls`: the server's own `TlsOptions` (its node certificate, key and CA) used
    as a client for subscribers marked `"mTLS": true`.
    """

    def __init__(
        self,
        ae_title: str,
        known_aes: Mapping[str, KnownAE],
        tls: TlsOptions | None = None,
        *,
        connect_timeout: float = 3.0,
        dimse_timeout: float = 10.0,
        retry_base: float = 0.5,
        retry_max: float = 30.0,
        max_attempts: int = 8,
        max_queue: int = 100_000,
        journal: EventJournal | None = None,
    ) -> None:
        self.ae_title = ae_title
        self.known_aes = dict(known_aes)
        self.tls = tls
        self.connect_timeout = connect_timeout
        self.dimse_timeout = dimse_timeout
        self.retry_base = retry_base
        self.retry_max = retry_max
        self.max_attempts = max_attempts
        self.max_queue = max_queue
        self.journal = journal
        self.stopping = threading.Event()
        self.stop_deadline = 0.0
        self.delivered: deque[Delivery] = deque(maxlen=10_000)
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()
        self._client_tls: ssl.SSLContext | None = None

    # -- queueing ----------------------------------------------------------------------

    def submit(self, ae_title: str, event_type: int, uid: str, info: Dataset) -> None:
        """Queue one report for `ae_title` (returns at once)."""
        if self.stopping.is_set():
            log.warning("not queuing %s for %s: stopping", EVENT_NAMES.get(event_type), ae_title)
            return
        report = EventReport(ae_title, event_type, uid, info)
        if self.journal is not None:
            try:
                report.journal_id = self.journal.add(ae_title, event_type, uid, info)
            except Exception as exc:  # still sent, just not kept across a restart
                log.warning("event journal: cannot keep %s: %s", report.describe(), exc)
        self._worker(ae_title).put(report)
        log.debug("queued %s for %s to %s", EVENT_NAMES.get(event_type), uid, ae_title)

    def submit_many(
        self, ae_title: str, event_type: int, reports: list[tuple[str, Dataset]]
    ) -> None:
        """Queue several reports of one type for `ae_title`, journaled in one commit (the
        initial State Reports of a global subscription: thousands at once)."""
        if self.stopping.is_set() or not reports:
            return
        ids: list[int | None] = [None] * len(reports)
        if self.journal is not None:
            try:
                ids = list(self.journal.add_many(ae_title, event_type, reports))
            except Exception as exc:  # still sent, just not kept across a restart
                log.warning("event journal: cannot keep %d report(s): %s", len(reports), exc)
        worker = self._worker(ae_title)
        for (uid, info), journal_id in zip(reports, ids, strict=True):
            worker.put(EventReport(ae_title, event_type, uid, info, journal_id=journal_id))
        log.debug("queued %d %s(s) for %s", len(reports), EVENT_NAMES.get(event_type), ae_title)

    def restore(self) -> int:
        """Queue again the journaled reports a previous run did not deliver; how many."""
        if self.journal is None:
            return 0
        reports = self.journal.pending()
        for item in reports:
            self._worker(item.ae_title).put(
                EventReport(item.ae_title, item.event_type, item.uid, item.info, journal_id=item.id)
            )
        if reports:
            log.info("%d event report(s) from before the restart queued again", len(reports))
        return len(reports)

    def discard(self, ae_title: str, uid: str | None = None) -> int:
        """Drop the reports still queued for `ae_title` (only those about `uid` when given),
        e.g. when it unsubscribes; one being sent right now still goes. How many."""
        with self._lock:
            worker = self._workers.get(ae_title)
        if worker is None:
            return 0
        with worker.cond:
            first = worker.queue[0] if worker.busy and worker.queue else None
            dropped = [r for r in worker.queue if r is not first and (uid is None or r.uid == uid)]
            for report in dropped:
                worker.queue.remove(report)
        self.forget(dropped)
        if dropped:
            log.info("dropped %d queued event report(s) for %s", len(dropped), ae_title)
        return len(dropped)

    def forget(self, reports: list[EventReport]) -> None:
        """Delete delivered or abandoned reports from the journal."""
        ids = [r.journal_id for r in reports if r.journal_id is not None]
        if self.journal is None or not ids:
            return
        try:
            self.journal.remove(ids)
        except Exception as exc:  # delivered twice after a restart at worst
            log.warning("event journal: cannot remove %d report(s): %s", len(ids), exc)

    def _worker(self, ae_title: str) -> _Worker:
        with self._lock:
            worker = self._workers.get(ae_title)
            if worker is None:
                worker = self._workers[ae_title] = _Worker(self, ae_title)
            return worker

    def record(self, delivery: Delivery) -> None:
        self.delivered.append(delivery)

    def pending(self) -> int:
        """Reports queued or being sent."""
        with self._lock:
            workers = list(self._workers.values())
        return sum(len(w.queue) for w in workers)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until every queue is empty and no worker is sending; False on timeout."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                workers = list(self._workers.values())
            if all(w.idle() for w in workers):
                return True
            time.sleep(0.02)
        return False

    def stop(self, timeout: float = 2.0) -> None:
        """Let the workers finish what they can within `timeout` s, then give up."""
        self.stop_deadline = time.monotonic() + timeout
        self.wait_idle(timeout)
        self.stopping.set()
        with self._lock:
            workers = list(self._workers.values())
        for worker in workers:
            with worker.cond:
                worker.cond.notify_all()
        left = self.pending()
        if left:
            kept = " (journaled: sent after the restart)" if self.journal is not None else ""
            log.warning("%d event report(s) not delivered at shutdown%s", left, kept)

    # -- associations --------------------------------------------------------------------

    def _client_context(self, mtls: bool) -> ssl.SSLContext | None:
        """The TLS client context for subscribers (plain: None), made once and kept."""
        if not mtls:
            return None
        if self._client_tls is None:
            tls = self.tls
            if tls is None or tls.cert is None or tls.key is None:
                raise TdwiiError("the subscriber wants mTLS but this server has no certificate")
            from tdwii_cli.tls.context import build_client_context

            self._client_tls = build_client_context(replace(tls, role="client", mode="mtls"))
        return self._client_tls

    def associate(self, known: KnownAE) -> contextlib.AbstractContextManager[Association]:
        """An association with subscriber `known` proposing the UPS Event context (over mutual
        TLS with our own node certificate when its entry says so)."""
        options = ScuOptions(
            calling_aet=self.ae_title,
            called_aet=known.ae_title,
            connect_timeout=self.connect_timeout,
            acse_timeout=self.connect_timeout + 2,
            dimse_timeout=self.dimse_timeout,
            network_timeout=self.dimse_timeout,
        )
        ctx = self._client_context(known.mtls)
        contexts = propose([UPS_EVENT], TRANSFER_SYNTAXES)
        assert known.address is not None and known.port is not None  # `reachable` checked
        return open_association(known.address, known.port, ctx, options, contexts)
