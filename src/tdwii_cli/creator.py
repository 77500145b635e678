"""The Workitem Creator (UPS Push SCU): check workitems locally, then N-CREATE them.

`prepare()` turns paths (or built datasets) into `Outcome`s: readable,
locally checked workitems ready to send, and files skipped with their reason.
`send()` sends the ready ones over ONE association (or one per `batch_size`),
recording each N-CREATE status. `exit_code()` sums a run up. The command module
only parses options and renders; tests and benchmarks call these directly.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tdwii_cli import exitcodes
from tdwii_cli.dicomfiles import NotDicomError, iter_paths, read_dataset
from tdwii_cli.errors import TdwiiError
from tdwii_cli.ups.ncreate import UPS_PUSH_SOP_CLASS, Problem, check_ncreate

if TYPE_CHECKING:
    from tdwii_cli.tlsoptions import TlsOptions

log = logging.getLogger("tdwii.create")

# Outcome kinds
READY = "ready"  # checked, not sent yet
CREATED = "created"  # 0000 or a warning (B300: created with modifications)
FAILED = "failed"  # the SCP answered a failure status
REFUSED = "refused"  # the local check found problems: not sent
NOT_DICOM = "not DICOM"  # unreadable / not a DICOM file: not sent
NOT_SENT = "not sent"  # the association failed before this one went out
DRY_RUN = "dry run"  # checked, sending skipped on request
SAVED = "saved"  # built and written to a file instead of being sent


@dataclass
class Outcome:
    """One workitem (or one unusable file) and what happened to it."""

    source: str
    dataset: Dataset | None = None
    kind: str = READY
    status: int | None = None
    detail: str = ""
    problems: list[Problem] = field(default_factory=list)
    seconds: float | None = None

    @property
    def sop_instance_uid(self) -> str:
        if self.dataset is None:
            return ""
        return str(self.dataset.get("SOPInstanceUID", "") or "")

    def to_json(self) -> dict[str, Any]:
        """A plain dict for `--json`."""
        return {
            "source": self.source,
            "sop_instance_uid": self.sop_instance_uid or None,
            "result": self.kind,
            "status": None if self.status is None else f"0x{self.status:04X}",
            "status_text": self.detail,
            "problems": [
                {"status": f"0x{p.status:04X}", "message": p.message} for p in self.problems
            ],
            "seconds": None if self.seconds is None else round(self.seconds, 4),
        }


@dataclass(frozen=True)
class Peer:
    """Where and how to connect."""

    host: str
    port: int
    tls: TlsOptions
    calling_aet: str = "TDWII"
    called_aet: str = "ANY-SCP"
    acse_timeout: float = 30.0
    dimse_timeout: float = 30.0
    network_timeout: float = 60.0
    connect_timeout: float | None = 10.0


def prepare_datasets(
    items: Iterable[tuple[str, Dataset]], *, new_uid: bool = False, check: bool = True
) -> list[Outcome]:
    """Outcomes for datasets already in memory (`source` names each in the results)."""
    outcomes = []
    for source, ds in items:
        if new_uid:
            ds.SOPInstanceUID = generate_uid()
        outcome = Outcome(source=source, dataset=ds)
        if check:
            outcome.problems = check_ncreate(ds)
            if outcome.problems:
                outcome.kind = REFUSED
                outcome.status = outcome.problems[0].status
                outcome.detail = "; ".join(p.message for p in outcome.problems)
        outcomes.append(outcome)
    return outcomes


def prepare(
    paths: Iterable[Path | str], *, new_uid: bool = False, check: bool = True
) -> list[Outcome]:
    """Read every file under `paths` (in order); non-DICOM files become NOT_DICOM outcomes."""
    outcomes = []
    for path in iter_paths(paths):
        try:
            ds = read_dataset(path)
        except NotDicomError as exc:
            outcomes.append(Outcome(source=str(path), kind=NOT_DICOM, detail=str(exc)))
            continue
        (outcome,) = prepare_datasets([(str(path), ds)], new_uid=new_uid, check=check)
        if outcome.kind == READY and check:
            # The check decoded the values it looked at, and a decoded dataset costs ~5x
            # more to encode again. Send a pristine copy instead: its elements are
            # still the file's bytes, written out unchanged in Explicit VR Little Endian.
            fresh = read_dataset(path)
            fresh.SOPInstanceUID = ds.SOPInstanceUID
            outcome.dataset = fresh
        outcomes.append(outcome)
    return outcomes


def status_words(status: int) -> str:
    """The standard's words for an N-CREATE status (pynetdicom's tables via scu)."""
    try:
        from tdwii_cli.scu import status_text
    except ImportError:  # pragma: no cover - scu is written by another issue
        return _fallback_status_text(status)
    return status_text(status)


def _fallback_status_text(status: int) -> str:
    from pynetdicom.status import GENERAL_STATUS as general
    from pynetdicom.status import UNIFIED_PROCEDURE_STEP_SERVICE_CLASS_STATUS as ups

    entry = ups.get(status) or general.get(status)
    if entry:
        return f"{entry[0]}: {entry[1]}" if entry[1] else entry[0]
    return "Unknown status"


def _associate(peer: Peer) -> Any:
    """An established association with the UPS Push context (TLS, NODELAY, logging).

    Uses the shared client `tdwii_cli.scu` when it is there; until then a small
    local client (`_local_associate`) does the same job.
    """
    try:
        from tdwii_cli import scu
    except ImportError:
        return _local_associate(peer)
    return scu.associate(
        peer.host,
        peer.port,
        tls=peer.tls,
        calling_aet=peer.calling_aet,
        called_aet=peer.called_aet,
        contexts=[UPS_PUSH_SOP_CLASS],
        acse_timeout=peer.acse_timeout,
        dimse_timeout=peer.dimse_timeout,
        network_timeout=peer.network_timeout,
        connect_timeout=peer.connect_timeout,
    )


# Explicit VR Little Endian first: a dataset read from a Part 10 file is then sent
# without re-encoding every element (about 4x cheaper than Implicit VR).
TRANSFER_SYNTAXES = ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


def client_ssl_context(tls: TlsOptions) -> Any:
    """A client `ssl.SSLContext` for `tls` (TLS 1.2+, our certificate for mutual TLS)."""
    import ssl

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    for ca in tls.ca:
        ctx.load_verify_locations(cafile=str(ca))
    if tls.cert is not None and tls.key is not None:
        ctx.load_cert_chain(str(tls.cert), str(tls.key), password=tls.key_password())
    ctx.check_hostname = tls.verify_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if tls.crl is not None:
        ctx.load_verify_locations(cafile=str(tls.crl))
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    ctx.set_alpn_protocols(["dicom"])
    return ctx


def _nodelay(event: Any) -> None:
    import socket

    sock = event.assoc.dul.socket.socket
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    event.assoc._tdwii_opened = True  # the TCP connection (and TLS handshake) succeeded


class _NoTraceback(logging.Filter):
    """Keep pynetdicom's error lines but drop their tracebacks (shown with -d only)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from tdwii_cli.console import is_debug

        if record.exc_info and not is_debug():
            record.exc_info = None
            record.exc_text = None
        return True


_NO_TRACEBACK = _NoTraceback()


def _diagnose(peer: Peer) -> TdwiiError:
    """Why the association could not be made: unreachable, or the TLS handshake."""
    import socket

    try:
        with socket.create_connection((peer.host, peer.port), timeout=peer.connect_timeout):
            pass
    except OSError as exc:
        return TdwiiError(
            f"cannot reach {peer.host}:{peer.port}: {exc.strerror or exc}",
            exitcodes.UNREACHABLE,
            hint="is the server running, and the host and port right?",
        )
    if peer.tls.enabled:
        return TdwiiError(
            f"TLS handshake with {peer.host}:{peer.port} failed",
            exitcodes.TLS_HANDSHAKE,
            hint="check the CA, our certificate and the server's; -d shows the reason",
        )
    return TdwiiError(
        f"association with {peer.host}:{peer.port} failed",
        exitcodes.ASSOC_ABORTED,
        hint="the peer closed the connection; does it expect TLS (--mtls)?",
    )


def _local_associate(peer: Peer) -> Any:
    from pynetdicom import AE, evt

    for handler in logging.getLogger("pynetdicom").handlers:
        if _NO_TRACEBACK not in handler.filters:
            handler.addFilter(_NO_TRACEBACK)
    ae = AE(peer.calling_aet)
    ae.add_requested_context(UPS_PUSH_SOP_CLASS, TRANSFER_SYNTAXES)
    ae.acse_timeout = peer.acse_timeout
    ae.dimse_timeout = peer.dimse_timeout
    ae.network_timeout = peer.network_timeout
    ae.connection_timeout = peer.connect_timeout
    tls_args = (client_ssl_context(peer.tls), peer.host) if peer.tls.enabled else None
    assoc = ae.associate(
        peer.host,
        peer.port,
        ae_title=peer.called_aet,
        tls_args=tls_args,
        evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)],
    )
    if assoc.is_established:
        # pynetdicom's reactor sleeps 1 ms when idle; poll faster while we stream requests.
        assoc.dul._run_loop_delay = 0.0002
        if not assoc.accepted_contexts:
            assoc.release()
            raise TdwiiError(
                "the server accepted no UPS Push presentation context",
                exitcodes.ASSOC_REJECTED,
                hint="is it a UPS worklist manager?",
            )
        return assoc
    if assoc.is_rejected:
        raise TdwiiError(
            f"association rejected by {peer.called_aet}@{peer.host}:{peer.port}",
            exitcodes.ASSOC_REJECTED,
            hint="check -aec (called AE title) and -aet",
        )
    if not getattr(assoc, "_tdwii_opened", False):
        raise _diagnose(peer)  # never connected: unreachable, or the TLS handshake failed
    raise TdwiiError(
        f"{peer.host}:{peer.port} closed the connection before accepting the association",
        exitcodes.ASSOC_ABORTED,
        hint="does the server expect TLS (--mtls)? see its log"
        if not peer.tls.enabled
        else "see the server's log",
    )


def send(
    outcomes: list[Outcome],
    peer: Peer,
    *,
    batch_size: int = 0,
    on_done: Callable[[Outcome], None] | None = None,
    associate: Callable[[Peer], Any] = _associate,
) -> int:
    """N-CREATE every READY outcome; return the number of associations used.

    All go over one association unless `batch_size` > 0 (then a new one every
    `batch_size` workitems). A failure to associate raises `TdwiiError` (scu's
    exit codes) when nothing was created yet; otherwise the remaining outcomes
    are marked NOT_SENT and the error is re-raised for the caller to report
    after rendering the table (see `SendInterrupted`).
    """
    ready = [o for o in outcomes if o.kind == READY]
    if not ready:
        return 0
    size = batch_size if batch_size > 0 else len(ready)
    associations = 0
    index = 0
    try:
        while index < len(ready):
            batch = ready[index : index + size]
            assoc = associate(peer)
            associations += 1
            try:
                for outcome in batch:
                    _create_one(assoc, outcome)
                    index += 1
                    if on_done:
                        on_done(outcome)
            finally:
                if assoc.is_established:
                    assoc.release()
    except TdwiiError as exc:
        for outcome in ready[index:]:
            outcome.kind = NOT_SENT
            outcome.detail = exc.message
        raise SendInterrupted(exc, associations) from None
    return associations


class SendInterrupted(TdwiiError):
    """The association failed part-way; the outcomes say which workitems went out."""

    def __init__(self, cause: TdwiiError, associations: int) -> None:
        super().__init__(cause.message, cause.exit_code, cause.hint)
        self.associations = associations


def _create_one(assoc: Any, outcome: Outcome) -> None:
    ds = outcome.dataset
    assert ds is not None
    uid = str(ds.get("SOPInstanceUID", "") or "") or None
    started = time.perf_counter()
    status, _attrs = assoc.send_n_create(ds, UPS_PUSH_SOP_CLASS, uid)
    outcome.seconds = time.perf_counter() - started
    if status is None or "Status" not in status:
        # No response: the association was aborted or the DIMSE timeout expired.
        reason = "no N-CREATE response (association aborted or DIMSE timeout)"
        if assoc.is_established:
            assoc.abort()
        raise TdwiiError(reason, exitcodes.ASSOC_ABORTED, hint="see the log (-v) for the cause")
    code = int(status.Status)
    outcome.status = code
    outcome.detail = status_words(code)
    comment = status.get("ErrorComment")
    if comment:
        outcome.detail += f" ({comment})"
    if "AffectedSOPInstanceUID" in status and not uid:
        ds.SOPInstanceUID = status.AffectedSOPInstanceUID
    # 0000 success; 0001/Bxxx warnings still created the instance (B300: with modifications)
    outcome.kind = CREATED if code == 0 or code == 0x0001 or (code >> 12) == 0xB else FAILED
    log.info(
        "N-CREATE %s %s: 0x%04X %s (%.1f ms)",
        outcome.source,
        outcome.sop_instance_uid,
        code,
        outcome.detail,
        outcome.seconds * 1000,
    )


def exit_code(outcomes: list[Outcome]) -> int:
    """0 when every workitem was created; 3 when some were and some were not;
    64 when none was and the server refused; 1 when none was sent at all."""
    if not outcomes:
        return exitcodes.ERROR
    created = sum(o.kind in (CREATED, DRY_RUN, SAVED) for o in outcomes)
    if created == len(outcomes):
        return exitcodes.OK
    if created:
        return exitcodes.PARTIAL
    if any(o.kind == FAILED for o in outcomes):
        return exitcodes.DIMSE_FAILURE
    return exitcodes.ERROR
