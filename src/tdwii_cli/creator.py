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
from tdwii_cli.scuoptions import ScuOptions
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
    net: ScuOptions = field(default_factory=ScuOptions)


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
    """The standard's words for an N-CREATE status (pynetdicom's tables)."""
    from tdwii_cli.netlog import status_text

    return status_text(status)


def _associate(peer: Peer) -> Any:
    """An established association with the UPS Push context (TLS, NODELAY, logging)."""
    from tdwii_cli import scu

    return scu.associate(
        peer.host,
        peer.port,
        tls=peer.tls,
        calling_aet=peer.net.calling_aet,
        called_aet=peer.net.called_aet,
        contexts=[UPS_PUSH_SOP_CLASS],
        acse_timeout=peer.net.acse_timeout,
        dimse_timeout=peer.net.dimse_timeout,
        network_timeout=peer.net.network_timeout,
        connect_timeout=peer.net.connect_timeout,
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
