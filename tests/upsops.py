"""UPS operations as a foreign delivery device does them (pynetdicom), for the end-to-end
tests of the UPS service and of authorization: the SOP Class UIDs, a TDW-II workitem
N-CREATE, N-ACTION (claim, subscribe, unsubscribe), N-SET, N-GET of the state, C-FIND, and
an mTLS association as a TDD (any node certificate of the test PKI)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from conftest import PKI_CLIENT, TdwiiServer, server_ssl_context
from peers import EventReceiver, scu_association
from tdwii_cli.ups.workitem import build_workitem

UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
UPS_WATCH = "1.2.840.10008.5.1.4.34.6.2"
UPS_PULL = "1.2.840.10008.5.1.4.34.6.3"
UPS_QUERY = "1.2.840.10008.5.1.4.34.6.5"
GLOBAL = "1.2.840.10008.5.1.4.34.5"
FILTERED_GLOBAL = "1.2.840.10008.5.1.4.34.5.1"
STATE_REPORT, CANCEL_REQUESTED, PROGRESS, SCP_STATUS, ASSIGNED = 1, 2, 3, 4, 5
DAY = datetime(2031, 5, 14, 9, 0, 0)


# -- subscribers and the delivery device (pynetdicom, tests/peers.py) -----------------------


def watcher(ae_title: str, certs: Path | None, node: str = "") -> EventReceiver:
    """A UPS Event receiver: mutual TLS with the node certificate `certs/servers/<node>`,
    trusting only that PKI's root CA, or plain DICOM when `certs` is None."""
    ctx = None if certs is None else server_ssl_context(certs, f"servers/{node}/{node}")
    return EventReceiver(ae_title, ctx)


@contextmanager
def tdd(server: TdwiiServer, ae_title: str = "TDD", node: str = PKI_CLIENT) -> Iterator[Any]:
    """An mTLS association from `ae_title` (`node`'s certificate, the PKI's client by
    default) to tdwii serve."""
    contexts = (UPS_PUSH, UPS_PULL, UPS_WATCH, UPS_QUERY)
    with scu_association(
        server, *contexts, ae_title=ae_title, called_aet="UPSSCP", timeout=15, node=node
    ) as assoc:
        assert assoc.is_established, "cannot associate with tdwii serve"
        yield assoc


def create(assoc: Any, keep_uids: bool = False, **kw: Any) -> str:
    """N-CREATE a TDW-II workitem; the SOP Instance UID goes in the command only, unless
    `keep_uids` (then the data set carries its SOP Class/Instance UIDs too)."""
    kw.setdefault("patient_id", "PAT-UPS")
    kw.setdefault("patient_name", "Doe^Jane")
    kw.setdefault("label", "Fx 1")
    kw.setdefault("station", "TB1")
    kw.setdefault("scheduled", DAY)
    ds = build_workitem(**kw)
    uid = str(ds.SOPInstanceUID)
    if not keep_uids:
        del ds.SOPInstanceUID
        del ds.SOPClassUID
    status, _ = assoc.send_n_create(ds, UPS_PUSH, uid)
    assert status.Status == 0x0000, status
    return uid


def action(assoc: Any, uid: str, action_type: int, sop_class: str = UPS_PULL, **info: Any) -> int:
    ds = Dataset()
    for keyword, value in info.items():
        setattr(ds, keyword, value)
    # no Action Information at all when empty (pynetdicom would announce an empty data set)
    status, _ = assoc.send_n_action(ds if len(ds) else None, action_type, sop_class, uid)
    assert status is not None and "Status" in status, "no N-ACTION response"
    return int(status.Status)


def claim(assoc: Any, uid: str, txn: str) -> int:
    return action(assoc, uid, 1, ProcedureStepState="IN PROGRESS", TransactionUID=txn)


def subscribe(assoc: Any, receiving: str, uid: str = GLOBAL, **info: Any) -> int:
    return action(assoc, uid, 3, UPS_WATCH, ReceivingAE=receiving, **info)


def unsubscribe(assoc: Any, receiving: str, uid: str = GLOBAL) -> int:
    return action(assoc, uid, 4, UPS_WATCH, ReceivingAE=receiving)


def n_set(assoc: Any, uid: str, **mods: Any) -> int:
    ds = Dataset()
    for keyword, value in mods.items():
        setattr(ds, keyword, value)
    status, _ = assoc.send_n_set(ds, UPS_PULL, uid)
    assert status is not None and "Status" in status, "no N-SET response"
    return int(status.Status)


def state_of(assoc: Any, uid: str) -> tuple[int, str | None]:
    """N-GET of the single attribute Procedure Step State (one tag, not a list)."""
    status, got = assoc.send_n_get([0x00741000], UPS_PULL, uid)
    return int(status.Status), got.ProcedureStepState if got is not None else None


def find(assoc: Any, sop_class: str = UPS_QUERY, **keys: Any) -> list[Dataset]:
    """C-FIND with the given keys; the matches (asserting a Success final status)."""
    query = Dataset()
    for keyword, value in keys.items():
        setattr(query, keyword, value)
    out = []
    for status, identifier in assoc.send_c_find(query, sop_class):
        assert status is not None and "Status" in status, "no C-FIND response"
        if status.Status in (0xFF00, 0xFF01):
            out.append(identifier)
        else:
            assert status.Status == 0x0000, hex(status.Status)
    return out


def code(value: str, scheme: str = "99IHERO2008", meaning: str | None = None) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    if meaning is not None:
        item.CodeMeaning = meaning
    return item


def final_attributes(txn: str) -> dict[str, Any]:
    """The N-SET that makes an IN PROGRESS workitem completable."""
    item = Dataset()
    item.PerformedProcedureStepStartDateTime = "20310514090000"
    item.PerformedProcedureStepEndDateTime = "20310514091500"
    item.PerformedStationNameCodeSequence = Sequence([code("TB1", meaning="TB1")])
    item.PerformedWorkitemCodeSequence = Sequence(
        [code("121726", "DCM", "RT Treatment with Internal Verification")]
    )
    item.OutputInformationSequence = Sequence()
    return {"TransactionUID": txn, "UnifiedProcedureStepPerformedProcedureSequence": [item]}
