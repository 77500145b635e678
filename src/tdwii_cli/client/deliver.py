"""A scripted treatment delivery device (`tdwii ups deliver`): the whole TDW-II loop.

RO-58 query for the station's SCHEDULED workitems, claim the first READY one (the
next when another performer got it first: C302), one progress update per beam
(RO-62), the final update (RO-64) and COMPLETED (RO-65), or CANCELED at beam
`cancel_at`. Each step is reported to `on_step` with its time since the start,
which is how a person proves a worklist manager handles the loop. The Transaction
UID is kept in the transaction file while the workitem is IN PROGRESS, so an
interrupted delivery can still be finished or cancelled by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from tdwii_cli import exitcodes
from tdwii_cli.client import procedure
from tdwii_cli.client.find import find
from tdwii_cli.client.statuses import DimseFailure
from tdwii_cli.client.transactions import Transaction, TransactionFile
from tdwii_cli.client.upsclient import UpsClient, connect
from tdwii_cli.dicom import status as st
from tdwii_cli.dicom.uids import UPS_PULL
from tdwii_cli.dicom.values import now_dt
from tdwii_cli.errors import TdwiiError
from tdwii_cli.ups.vocabulary import CANCELED, COMPLETED, SCHEDULED
from tdwii_cli.ups.worklist import Match, WorklistQuery

if TYPE_CHECKING:
    from tdwii_cli.client.peer import Peer


@dataclass(frozen=True)
class Step:
    """One step of a delivery: seconds since the start, the workitem, what, the status."""

    seconds: float
    uid: str
    what: str
    status: int | None = None


@dataclass
class Delivery:
    """One workitem delivered (or cancelled)."""

    uid: str
    transaction_uid: str = ""
    final_state: str = ""
    steps: list[Step] = field(default_factory=list)


def _priority(match: Match) -> int:
    return {"HIGH": 0, "MEDIUM": 1, "LOW": 2}.get(match.priority, 1)


def candidates(matches: list[Match]) -> list[Match]:
    """The READY SCHEDULED workitems, by scheduled start then priority."""
    ready = [m for m in matches if m.state == SCHEDULED and m.readiness in ("READY", "")]
    return sorted(ready, key=lambda m: (m.scheduled, _priority(m)))


def deliver(
    peer: Peer,
    station: str,
    *,
    beams: int = 2,
    pace: float = 0.0,
    cancel_at: int = 0,
    every: bool = False,
    transactions: TransactionFile | None = None,
    on_step: Callable[[Step], None] | None = None,
) -> list[Delivery]:
    """Deliver the station's next workitem (all of them with `every`); see the module."""
    started = time.perf_counter()
    done: list[Delivery] = []

    def step(uid: str, what: str, status: int | None = None) -> None:
        item = Step(time.perf_counter() - started, uid, what, status)
        if done and done[-1].uid == uid:
            done[-1].steps.append(item)
        if on_step is not None:
            on_step(item)

    ready: list[Match] = []  # only these are kept, without their bytes

    def keep(match: Match) -> None:
        if candidates([match]):
            ready.append(replace(match, data=b""))

    found = find(peer, WorklistQuery(station=station, state=SCHEDULED), on_match=keep)
    todo = candidates(ready)
    step("", f"RO-58 worklist query for {station}: {found.count} SCHEDULED, "
         f"{len(todo)} READY", found.status)  # fmt: skip
    if not todo:
        raise TdwiiError(
            f"no READY SCHEDULED workitem for station {station}",
            exitcodes.ERROR,
            hint="tdwii ups find --station lists what the worklist holds",
        )
    with connect(peer, [UPS_PULL]) as client:
        for match in todo:
            delivery = Delivery(match.uid)
            done.append(delivery)
            txn = procedure.new_transaction_uid()
            claimed = now_dt()
            try:
                status = procedure.claim(client, match.uid, txn)
            except DimseFailure as exc:
                if exc.status in (st.UPS_ALREADY_IN_PROGRESS, st.UPS_MAY_NO_LONGER_BE_UPDATED):
                    step(match.uid, "RO-60 claim: another performer was first", exc.status)
                    done.pop()
                    continue
                raise
            delivery.transaction_uid = txn
            if transactions is not None:
                transactions.put(
                    Transaction(match.uid, txn, peer.address, peer.net.called_aet, claimed)
                )
            step(match.uid, f"RO-60 claimed (Transaction UID {txn})", status)
            delivery.final_state = _treat(
                client, match, txn, claimed, station, beams, pace, cancel_at, step
            )
            if transactions is not None:
                transactions.remove(match.uid)
            if not every:
                break
    return done


def _treat(
    client: UpsClient,
    match: Match,
    txn: str,
    claimed: str,
    station: str,
    beams: int,
    pace: float,
    cancel_at: int,
    step: Callable[[str, str, int | None], None],
) -> str:
    uid = match.uid
    for beam in range(1, beams + 1):
        if pace:
            time.sleep(pace)
        if beam == cancel_at:
            reason = f"treatment interrupted at beam {beam} of {beams}"
            status = procedure.cancel(
                client, uid, txn, started=claimed, station=station, reason=reason
            )
            step(uid, f"RO-64/65 final update and CANCELED at beam {beam}", status)
            return CANCELED
        percent = round(100 * beam / beams, 1)
        status = procedure.progress(
            client, uid, txn, percent, f"beam {beam} of {beams} delivered", beam
        )
        step(uid, f"RO-62 progress: beam {beam} of {beams}, {percent:g}%", status)
    status = procedure.complete(client, uid, txn, started=claimed, station=station)
    step(uid, "RO-64 final update, RO-65 COMPLETED", status)
    return COMPLETED
