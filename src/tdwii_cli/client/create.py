"""The Workitem Creator (UPS Push SCU): check workitems locally, then N-CREATE them.

`prepare_iter()` turns paths (or `prepare_datasets()` built datasets) into
`Outcome`s: readable, locally checked workitems ready to send, and files
skipped with their reason. `send()` sends the ready ones over ONE association
(or one per `batch_size`), reading and checking the next file while the server
works on the current one, and records each N-CREATE status. `exit_code()` sums
a run up. The command module only parses options and renders.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tdwii_cli import exitcodes
from tdwii_cli.client.dicomfiles import NotDicomError, dataset_bytes, iter_paths, read_file
from tdwii_cli.client.peer import Peer as Peer
from tdwii_cli.dicom import codec
from tdwii_cli.dicom.status import SUCCESS, is_warning, status_words
from tdwii_cli.dicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE, UPS_PUSH
from tdwii_cli.errors import Interrupted, TdwiiError
from tdwii_cli.net.dimse import N_CREATE_RQ, Command
from tdwii_cli.text import one_line
from tdwii_cli.ups.ncreate import Problem, check_ncreate

if TYPE_CHECKING:
    from tdwii_cli.net.association import AcceptedContext, Association

log = logging.getLogger("tdwii.create")

# Outcome kinds
READY = "ready"  # checked, not sent yet
CREATED = "created"  # 0000 or a warning (B300: created with modifications)
FAILED = "failed"  # the SCP answered a failure status
REFUSED = "refused"  # the local check found problems: not sent
NOT_DICOM = "skipped"  # missing, unreadable or not a DICOM file: not sent
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
    # The data set as the file encodes it, sent unchanged when the peer accepts its syntax.
    encoded: bytes | None = field(default=None, repr=False)
    encoded_syntax: str = ""

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


def prepare_iter(
    paths: Iterable[Path | str], *, new_uid: bool = False, check: bool = True
) -> Iterator[Outcome]:
    """One outcome per file under `paths`, read and checked when asked for (see `send`)."""
    for path in iter_paths(paths):
        try:
            ds, data = read_file(path)
        except NotDicomError as exc:
            yield Outcome(source=str(path), kind=NOT_DICOM, detail=str(exc))
            continue
        try:
            (outcome,) = prepare_datasets([(str(path), ds)], new_uid=new_uid, check=check)
        except Exception as exc:  # a value pydicom cannot decode while checking
            detail = f"unreadable DICOM: {type(exc).__name__}: {exc}"
            yield Outcome(source=str(path), kind=NOT_DICOM, detail=detail)
            continue
        if outcome.kind == READY and not new_uid:
            # Sent as the file has it when the peer accepts its transfer syntax: no encoding,
            # and no re-encoding of the values the check decoded.
            outcome.encoded = dataset_bytes(data)
            outcome.encoded_syntax = str(ds.file_meta.get("TransferSyntaxUID", ""))
        yield outcome


def prepare(
    paths: Iterable[Path | str], *, new_uid: bool = False, check: bool = True
) -> list[Outcome]:
    """Read every file under `paths` (in order); non-DICOM files become NOT_DICOM outcomes."""
    return list(prepare_iter(paths, new_uid=new_uid, check=check))


def send(
    outcomes: Iterable[Outcome],
    peer: Peer,
    *,
    batch_size: int = 0,
    on_done: Callable[[Outcome], None] | None = None,
) -> int:
    """N-CREATE every READY outcome, in order; return the number of associations used.

    All go over one association unless `batch_size` > 0 (then a new one every
    `batch_size` workitems); none is opened when nothing is READY. `outcomes`
    may be lazy (`prepare_iter`): the next one is taken while the peer works
    on the current request, so reading and checking files costs no extra time.
    `on_done` is called for every outcome once it is final. When an association
    fails, the READY outcomes not answered become NOT_SENT and `SendInterrupted`
    (a `TdwiiError` with the raw client's exit code) is raised; likewise on Ctrl-C
    (`Interrupted`, exit 130), without reading the files not reached.
    """
    from tdwii_cli.net.association import propose

    done = on_done or (lambda _outcome: None)
    stream = iter(outcomes)

    def next_ready() -> Outcome | None:
        for outcome in stream:
            if outcome.kind == READY:
                return outcome
            done(outcome)
        return None

    current = next_ready()
    if current is None:
        return 0
    # a context per transfer syntax: we choose Explicit VR LE, as the files usually have it
    contexts = propose([UPS_PUSH], (EXPLICIT_VR_LE, IMPLICIT_VR_LE), separate=True)
    associations = 0
    following: Outcome | None = None
    try:
        while current is not None:
            with peer.associate(contexts) as assoc:
                associations += 1
                context = assoc.context(UPS_PUSH, (EXPLICIT_VR_LE, IMPLICIT_VR_LE))
                sent = 0
                while current is not None and not (batch_size and sent == batch_size):
                    sent += 1
                    started = time.perf_counter()
                    request = _send_request(assoc, context, current)
                    following = next_ready()  # read and check it while the peer works
                    _read_response(assoc, request, current, started)
                    current.encoded = None  # sent: a long run keeps no file bytes
                    done(current)
                    current, following = following, None
    except TdwiiError as exc:
        for outcome in (current, following):
            if outcome is not None:
                _not_sent(outcome, exc, done)
        for outcome in stream:
            _not_sent(outcome, exc, done)
        raise SendInterrupted(exc, associations) from None
    except Interrupted as stop:  # Ctrl-C: the files not read yet stay unread
        cause = TdwiiError(stop.message, exitcodes.INTERRUPTED)
        for outcome in (current, following):
            if outcome is not None:
                _not_sent(outcome, cause, done)
        raise SendInterrupted(cause, associations) from None
    return associations


def _not_sent(outcome: Outcome, exc: TdwiiError, done: Callable[[Outcome], None]) -> None:
    if outcome.kind == READY:
        outcome.kind = NOT_SENT
        outcome.detail = exc.message
    done(outcome)


class SendInterrupted(TdwiiError):
    """The association failed part-way; the outcomes say which workitems went out."""

    def __init__(self, cause: TdwiiError, associations: int) -> None:
        super().__init__(cause.message, cause.exit_code, cause.hint)
        self.cause = cause
        self.associations = associations


def _payload(outcome: Outcome, transfer_syntax: str) -> bytes:
    if outcome.encoded is not None and outcome.encoded_syntax == transfer_syntax:
        return outcome.encoded
    assert outcome.dataset is not None
    return codec.encode(outcome.dataset, transfer_syntax)


def _send_request(assoc: Association, context: AcceptedContext, outcome: Outcome) -> Command:
    """Send the N-CREATE-RQ for `outcome` (its data set as the file has it, when it can be)."""
    assert outcome.dataset is not None
    uid = str(outcome.dataset.get("SOPInstanceUID", "") or "")
    payload = _payload(outcome, context.transfer_syntax)
    request = Command(
        N_CREATE_RQ,
        message_id=assoc.next_message_id(),
        sop_class=UPS_PUSH,
        sop_instance=uid,
        has_dataset=True,
    )
    assoc.send(request, payload, context)
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s: sent N-CREATE-RQ id=%d uid=%s, %d-byte data set (%s)",
            assoc.peer,
            request.message_id,
            uid or "(the SCP assigns one)",
            len(payload),
            "the file's bytes" if payload is outcome.encoded else "encoded",
        )
    return request


def _read_response(assoc: Association, request: Command, outcome: Outcome, started: float) -> None:
    """The N-CREATE-RSP to `request`; the outcome records the status."""
    rsp = assoc.response(request).command
    outcome.seconds = time.perf_counter() - started
    ds = outcome.dataset
    assert ds is not None and rsp.status is not None
    code = rsp.status
    outcome.status = code
    outcome.detail = status_words(code, "N-CREATE")
    if rsp.error_comment:
        outcome.detail += f" ({one_line(rsp.error_comment)})"
    if rsp.sop_instance and not ds.get("SOPInstanceUID"):
        ds.SOPInstanceUID = rsp.sop_instance
    outcome.kind = CREATED if created(code) else FAILED
    log.info(
        "N-CREATE %s %s: 0x%04X %s (%.1f ms)",
        outcome.source,
        outcome.sop_instance_uid,
        code,
        outcome.detail,
        outcome.seconds * 1000,
    )


def created(status: int) -> bool:
    """Did an N-CREATE with this status create the instance? Success, or a warning:
    0001, 0107 (attribute list error), 0116 (value out of range), Bxxx (e.g. B300)."""
    return status == SUCCESS or is_warning(status)


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
