"""The audit trail of one process: messages taken note of, written into the spool by one
writer thread, and sent by one sender thread per destination, in order, each at its pace.

`record()` only queues the message (or what builds it) and returns: auditing never waits
on a disk or a network on the DICOM path. Every 20 ms (`GATHER`) the writer builds what
gathered, frames it (RFC 5424) and appends it to the spool in one write; it gathers rather
than running per message because its Python work competes with the DICOM thread for the
interpreter lock. What a `kill -9` can lose is what was queued in those last 20 ms, never
what the spool holds. Each sender sends what its destination has not taken yet, in
batches, and lingers `LINGER` after each, so that a busy server sends a few batches a
second rather than one message each; a destination that fails is retried with back-off
(0.5 s doubling to 30 s) and its messages wait in the spool, which survives a restart and
`kill -9`. One WARNING when a destination stops taking messages, one when it takes them
again.

The spool is bounded (`limit` messages waiting): when it is full, further messages are
dropped and counted, with one ERROR line and a Security Alert "Audit Recording
Stopped" (kept in the spool's reserve); once the destinations have taken a tenth of
the spool, "Audit Recording Started" says how many were lost.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping

from tdwii_cli.audit import events, syslog
from tdwii_cli.audit import messages as m
from tdwii_cli.audit.destinations import Destination, FileSink, Sink, SinkError
from tdwii_cli.audit.spool import Spool

log = logging.getLogger("tdwii.audit")

_BATCH = 256
Message = m.AuditMessage | Callable[[], m.AuditMessage]  # a message, or what builds it
LINGER = 0.5  # after a batch, let the next one gather: a few sends a second, not one each
GATHER = 0.02  # the writer's pause before a commit: what comes meanwhile goes in the same one


class AuditTrail:
    """See the module docstring."""

    def __init__(
        self,
        node: events.Node,
        spool: Spool,
        sinks: Mapping[Destination, Sink],
        *,
        retry_base: float = 0.5,
        retry_max: float = 30.0,
    ) -> None:
        self.node = node
        self.spool = spool
        self.sinks = dict(sinks)
        self.retry_base = retry_base
        self.retry_max = retry_max
        self._wake = threading.Condition()
        self._pending: list[tuple[Message, bool]] = []  # waiting for the writer
        self._pending_lock = threading.Lock()
        self._have_pending = threading.Event()
        self._writer: threading.Thread | None = None
        self._stopping = threading.Event()
        self._flush_deadline = 0.0
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._dropped = 0  # messages lost since the spool filled up
        self._stopped_recording = False
        self._errors_logged = 0.0

    # -- recording -------------------------------------------------------------------------

    def record(self, message: Message) -> None:
        """Keep `message` for every destination (never raises, never waits on a disk or a
        network): the writer writes it out and commits it. A callable is built there (its
        `when` given already)."""
        self._enqueue(message, False)

    def _enqueue(self, message: Message, reserved: bool) -> None:
        with self._pending_lock:
            if not reserved and self.spool.count + len(self._pending) >= self.spool.limit:
                full = True
            else:
                self._pending.append((message, reserved))
                full = False
        if not full:
            if not self._have_pending.is_set():  # the writer is told once per gathering
                self._have_pending.set()
            return
        with self._lock:
            self._dropped += 1
            first = not self._stopped_recording
            self._stopped_recording = True
        if first:
            self._recording_stopped()

    def _write_loop(self) -> None:
        """The writer: build what is pending and append it to the spool in one write."""
        while True:
            self._have_pending.wait(0.5)
            if not self._stopping.is_set():
                self._stopping.wait(GATHER)  # a few commits a second, each of many messages
            self._have_pending.clear()
            with self._pending_lock:
                batch, self._pending = self._pending, []
            if batch:
                bodies = []
                for message, reserved in batch:
                    try:
                        bodies.append((self._frame(message), reserved))
                    except Exception:  # a bug: that message is lost, not the others
                        log.exception("an audit message could not be written")
                try:
                    self.spool.add_many(bodies)
                except Exception as exc:  # a full disk, a broken spool: DICOM goes on
                    self._spool_failed(exc)
                self._notify()
            elif self._stopping.is_set():
                return

    def _frame(self, message: Message) -> bytes:
        if not isinstance(message, m.AuditMessage):
            message = message()
        severity = syslog.NOTICE if message.outcome == m.SUCCESS else syslog.WARNING
        return syslog.message(
            message.xml(),
            when=message.when,
            hostname=self.node.hostname,
            procid=str(self.node.pid),
            severity=severity,
        )

    def _notify(self) -> None:
        with self._wake:
            self._wake.notify_all()

    def _spool_failed(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._errors_logged >= 60:
            self._errors_logged = now
            log.error("audit message lost: the spool %s cannot take it: %s", self.spool.path, exc)

    def _recording_stopped(self) -> None:
        waiting = ", ".join(f"{dest} {self.spool.waiting(dest.text)}" for dest in self.sinks)
        log.error(
            "audit spool %s is full (%d messages waiting: %s): audit messages are dropped "
            "until the destinations take them",
            self.spool.path,
            self.spool.limit,
            waiting,
        )
        alert = events.security_alert(
            self.node,
            m.AUDIT_RECORDING_STOPPED,
            f"the audit spool holds its limit of {self.spool.limit} messages that the "
            f"destinations have not taken ({waiting}): further audit messages are dropped",
            outcome=m.SERIOUS_FAILURE,
        )
        self._add_reserved(alert)

    def _maybe_restarted(self) -> None:
        with self._lock:
            if not self._stopped_recording or self.spool.count > self.spool.limit * 0.9:
                return
            dropped, self._dropped = self._dropped, 0
            self._stopped_recording = False
        log.warning("audit spool has room again: %d audit message(s) were dropped", dropped)
        alert = events.security_alert(
            self.node,
            m.AUDIT_RECORDING_STARTED,
            f"audit recording resumed; {dropped} audit message(s) were dropped while the "
            "spool was full",
            outcome=m.MINOR_FAILURE,
        )
        self._add_reserved(alert)

    def _add_reserved(self, message: m.AuditMessage) -> None:
        self._enqueue(message, True)

    # -- sending ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the writer and one sender per destination."""
        self._writer = threading.Thread(target=self._write_loop, name="tdwii-audit-writer")
        self._writer.daemon = True
        self._writer.start()
        for destination, sink in self.sinks.items():
            thread = threading.Thread(
                target=self._run, args=(destination, sink), name="tdwii-audit", daemon=True
            )
            self._threads.append(thread)
            thread.start()

    def stop(self, flush: float = 2.0) -> None:
        """Let the senders send what they can within `flush` seconds, then stop them; what
        is left stays in the spool for the next start."""
        self._flush_deadline = time.monotonic() + flush
        self._stopping.set()
        self._have_pending.set()
        if self._writer is not None:
            self._writer.join(flush + 5.0)
        self._notify()
        for thread in self._threads:
            thread.join(max(0.0, self._flush_deadline - time.monotonic()))
        for sink in self.sinks.values():
            sink.close()  # a sender still waiting on its destination: its wait ends now
        for thread in self._threads:
            thread.join(2.0)
        self.spool.close()

    def _run(self, destination: Destination, sink: Sink) -> None:
        name = destination.text
        try:
            if isinstance(sink, FileSink):
                self._resume_file(destination, sink)
        except SinkError as exc:
            log.warning("audit destination %s: %s", destination, exc)
        failures = 0
        while True:
            stopping = self._stopping.is_set()
            if stopping and time.monotonic() >= self._flush_deadline:
                return
            try:
                rows = self.spool.batch(name, _BATCH)
            except Exception as exc:  # the spool is closing or broken: nothing to send
                if not stopping:
                    log.error("audit destination %s: cannot read the spool: %s", destination, exc)
                return
            if not rows:
                if stopping:
                    return
                sink.idle()
                with self._wake:
                    self._wake.wait(0.5)
                continue
            try:
                size = sink.send([body for _, body in rows])
            except Exception as exc:  # SinkError; anything else is treated alike, never fatal
                if not isinstance(exc, SinkError):
                    log.exception("audit destination %s: unexpected failure", destination)
                failures += 1
                if stopping:
                    return
                if failures == 1:
                    log.warning(
                        "audit destination %s is not taking messages: %s; they wait in %s "
                        "(%d now) and are sent when it is back",
                        destination,
                        exc,
                        self.spool.path,
                        self.spool.waiting(name),
                    )
                delay = min(self.retry_max, self.retry_base * 2 ** (failures - 1))
                self._stopping.wait(delay)
                continue
            self.spool.sent(name, rows[-1][0], size)
            if not stopping:
                self._stopping.wait(LINGER)
            if failures:
                log.warning(
                    "audit destination %s is taking messages again (%d still waiting)",
                    destination,
                    self.spool.waiting(name),
                )
                failures = 0
            self._maybe_restarted()

    def _resume_file(self, destination: Destination, sink: FileSink) -> None:
        """Count the lines a crash left written but not marked as sent (none twice)."""
        sent, recorded = self.spool.cursor(destination.text)
        lines, size = sink.resume(recorded)
        if lines <= 0:
            if recorded is not None and size != recorded:
                self.spool.sent(destination.text, sent, size)
            return
        rows = self.spool.batch(destination.text, lines)
        if rows:
            self.spool.sent(destination.text, rows[min(lines, len(rows)) - 1][0], size)
            log.info(
                "audit file %s: %d message(s) written before a stop were already there",
                destination,
                min(lines, len(rows)),
            )

    def waiting(self) -> dict[str, int]:
        """Messages each destination has not taken yet."""
        return {dest.text: self.spool.waiting(dest.text) for dest in self.sinks}
