"""Subscriptions to UPS event reports (N-ACTION 3, 4, 5 on the UPS Watch SOP Class).

A subscription names one workitem, the Global Subscription instance (every
workitem, now and to come) or the Filtered Global Subscription instance (the
workitems that match keys, as a C-FIND identifier would). The Receiving AE is
the AE title the SCP sends the reports to; the SCP must know its address.
"""

from __future__ import annotations

from collections.abc import Sequence

from tdwii_cli.client.statuses import judge
from tdwii_cli.client.upsclient import UpsClient
from tdwii_cli.dicom import rawdataset as raw
from tdwii_cli.dicom.keys import KNOWN, Key, build
from tdwii_cli.dicom.uids import (
    UPS_FILTERED_GLOBAL_SUBSCRIPTION,
    UPS_GLOBAL_SUBSCRIPTION,
    UPS_WATCH,
)
from tdwii_cli.ups.vocabulary import SUBSCRIBE, SUSPEND_GLOBAL, UNSUBSCRIBE


def target(uid: str | None, filters: Sequence[Key]) -> str:
    """The instance a (un)subscription names: a workitem, the Global or the Filtered Global
    Subscription instance."""
    if uid:
        return uid
    if filters:
        return UPS_FILTERED_GLOBAL_SUBSCRIPTION
    return UPS_GLOBAL_SUBSCRIPTION


def action_info(receiving_ae: str, lock: bool | None, filters: Sequence[Key] = ()) -> bytes:
    """The action information: Receiving AE, Deletion Lock, and the filter's keys."""
    parts = [
        *raw.elements(build(filters)),
        raw.text_element(_tag("ReceivingAE"), b"AE", receiving_ae),
    ]
    if lock is not None:
        parts.append(raw.text_element(_tag("DeletionLock"), b"LO", "TRUE" if lock else "FALSE"))
    return raw.ordered(parts)


def _tag(keyword: str) -> int:
    return KNOWN[keyword][0]


def subscribe(
    client: UpsClient,
    instance: str,
    receiving_ae: str,
    *,
    lock: bool = False,
    filters: Sequence[Key] = (),
) -> int:
    """N-ACTION Subscribe to `instance`; the status (B301: lock not granted, a warning)."""
    info = action_info(receiving_ae, lock, filters)
    rsp = client.action(instance, SUBSCRIBE, info, (UPS_WATCH,))
    what = f"subscribe {receiving_ae} to {_label(instance)}"
    return judge(what, rsp.status, rsp.comment, operation="N-ACTION")


def unsubscribe(client: UpsClient, instance: str, receiving_ae: str) -> int:
    """N-ACTION Unsubscribe from `instance` (a global instance: from everything)."""
    info = action_info(receiving_ae, None)
    rsp = client.action(instance, UNSUBSCRIBE, info, (UPS_WATCH,))
    what = f"unsubscribe {receiving_ae} from {_label(instance)}"
    return judge(what, rsp.status, rsp.comment, operation="N-ACTION")


def suspend(client: UpsClient, receiving_ae: str) -> int:
    """N-ACTION Suspend Global Subscription: no new workitems for `receiving_ae`."""
    info = action_info(receiving_ae, None)
    rsp = client.action(UPS_GLOBAL_SUBSCRIPTION, SUSPEND_GLOBAL, info, (UPS_WATCH,))
    what = f"suspend the global subscription of {receiving_ae}"
    return judge(what, rsp.status, rsp.comment, operation="N-ACTION")


def _label(instance: str) -> str:
    return {
        UPS_GLOBAL_SUBSCRIPTION: "all workitems",
        UPS_FILTERED_GLOBAL_SUBSCRIPTION: "the matching workitems",
    }.get(instance, instance)
