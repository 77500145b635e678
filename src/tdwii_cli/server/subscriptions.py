"""UPS subscriptions (PS3.4 CC.2.3), kept in the workitem database so they survive a restart.

One row per (receiving AE title, target). The target is a workitem's SOP Instance
UID, the Global Subscription instance (1.2.840.10008.5.1.4.34.5) or the Filtered
Global Subscription instance (1.2.840.10008.5.1.4.34.5.1, with its matching keys
kept encoded in `filter`).

The standard's model is followed literally: a global subscription subscribes the
AE to every existing workitem that is not final and to every workitem created
later (a filtered one: to those matching its keys); each of these is an instance
row that carries the global request's Deletion Lock. Unsubscribing from one
instance leaves the global subscription; unsubscribing from a global instance
removes all of the AE's subscriptions; suspending a global subscription stops new
workitems from being added but keeps the instance subscriptions already made.

A workitem with an instance row holding a Deletion Lock is never purged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from tdwii_cli.clock import utc_timestamp
from tdwii_cli.dicom.uids import UPS_FILTERED_GLOBAL_SUBSCRIPTION as FILTERED_GLOBAL
from tdwii_cli.dicom.uids import UPS_GLOBAL_SUBSCRIPTION as GLOBAL
from tdwii_cli.dicom.uids import UPS_WELL_KNOWN as WELL_KNOWN
from tdwii_cli.server.store import WorkitemStore, decode_dataset, encode_dataset
from tdwii_cli.ups import matching


@dataclass(frozen=True)
class Subscription:
    """One stored subscription row."""

    ae_title: str
    target: str
    deletion_lock: bool
    suspended: bool
    filter: Dataset | None = None

    @property
    def is_global(self) -> bool:
        return self.target in WELL_KNOWN


class Subscriptions:
    """The subscription table of one `WorkitemStore` (same connection, same lock)."""

    def __init__(self, store: WorkitemStore) -> None:
        self.store = store

    # -- subscribe / unsubscribe / suspend -------------------------------------------------

    def subscribe_instance(self, ae_title: str, uid: str, deletion_lock: bool) -> None:
        """Subscribe `ae_title` to workitem `uid` (replacing its Deletion Lock choice)."""
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO subscriptions (ae_title, target, deletion_lock, created_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT(ae_title, target) DO UPDATE SET "
                "deletion_lock = excluded.deletion_lock",
                (ae_title, uid, int(deletion_lock), utc_timestamp()),
            )

    def subscribe_global(
        self, ae_title: str, deletion_lock: bool, keys: Dataset | None = None
    ) -> list[str]:
        """Global subscription (filtered when `keys` is given); a suspended one is resumed.

        Returns the UIDs of the existing non-final workitems the AE is newly
        subscribed to (each gets an initial State Report).
        """
        target = FILTERED_GLOBAL if keys is not None else GLOBAL
        query = matching.Query.from_identifier(keys) if keys is not None else None
        blob = encode_dataset(keys) if keys is not None else None
        added: list[str] = []
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO subscriptions (ae_title, target, deletion_lock, filter, suspended, "
                "created_at) VALUES (?, ?, ?, ?, 0, ?) ON CONFLICT(ae_title, target) DO UPDATE "
                "SET deletion_lock = excluded.deletion_lock, filter = excluded.filter, "
                "suspended = 0",
                (ae_title, target, int(deletion_lock), blob, utc_timestamp()),
            )
            where = "state IN ('SCHEDULED', 'IN PROGRESS')"
            params: list[Any] = []
            if query is not None:
                where += f" AND ({query.where})"
                params = list(query.params)
            already = {
                r[0]
                for r in conn.execute(
                    "SELECT target FROM subscriptions WHERE ae_title = ?", (ae_title,)
                )
            }
            for item in self.store.select(where, params):
                if item.uid in already:
                    continue
                if query is not None and not query.post_filter(item.dataset):
                    continue
                added.append(item.uid)
            conn.executemany(
                "INSERT OR IGNORE INTO subscriptions (ae_title, target, deletion_lock, "
                "created_at) VALUES (?, ?, ?, ?)",
                [(ae_title, uid, int(deletion_lock), utc_timestamp()) for uid in added],
            )
        return added

    def unsubscribe(self, ae_title: str, target: str) -> int:
        """Remove a subscription; from a global instance: every subscription of the AE.

        Returns the number of rows removed (0 is not an error).
        """
        with self.store.transaction() as conn:
            if target in WELL_KNOWN:
                cursor = conn.execute("DELETE FROM subscriptions WHERE ae_title = ?", (ae_title,))
            else:
                cursor = conn.execute(
                    "DELETE FROM subscriptions WHERE ae_title = ? AND target = ?",
                    (ae_title, target),
                )
            return int(cursor.rowcount)

    def suspend(self, ae_title: str) -> bool:
        """Suspend the AE's global (and filtered global) subscription; False if it has none."""
        with self.store.transaction() as conn:
            cursor = conn.execute(
                "UPDATE subscriptions SET suspended = 1 WHERE ae_title = ? AND target IN (?, ?)",
                (ae_title, GLOBAL, FILTERED_GLOBAL),
            )
            return cursor.rowcount > 0

    # -- lookups ---------------------------------------------------------------------------

    def subscribers(self, uid: str) -> list[str]:
        """AE titles subscribed to workitem `uid`."""
        rows = self.store.query(
            "SELECT ae_title FROM subscriptions WHERE target = ? ORDER BY ae_title", (uid,)
        )
        return [r[0] for r in rows]

    def all(self) -> list[Subscription]:
        """Every subscription row (instance rows too), ordered by AE title and target."""
        rows = self.store.query(
            "SELECT ae_title, target, deletion_lock, suspended, filter FROM subscriptions "
            "ORDER BY ae_title, target"
        )
        return [
            Subscription(r[0], r[1], bool(r[2]), bool(r[3]), decode_dataset(r[4]) if r[4] else None)
            for r in rows
        ]

    def global_subscribers(self) -> list[str]:
        """AE titles with a global or filtered global subscription (suspended or not)."""
        rows = self.store.query(
            "SELECT DISTINCT ae_title FROM subscriptions WHERE target IN (?, ?) ORDER BY ae_title",
            (GLOBAL, FILTERED_GLOBAL),
        )
        return [r[0] for r in rows]

    def is_locked(self, uid: str) -> bool:
        """Whether some subscriber holds a Deletion Lock on workitem `uid`."""
        found = self.store.query(
            "SELECT 1 FROM subscriptions WHERE target = ? AND deletion_lock = 1 LIMIT 1",
            (uid,),
        )
        return bool(found)

    # -- workitem life cycle ---------------------------------------------------------------

    def on_created(self, ds: Dataset) -> list[str]:
        """Subscribe the active global (and matching filtered global) subscribers to new
        workitem `ds`; return their AE titles (they get its SCHEDULED State Report)."""
        uid = str(ds.SOPInstanceUID)
        rows = self.store.query(
            "SELECT ae_title, target, deletion_lock, filter FROM subscriptions "
            "WHERE target IN (?, ?) AND suspended = 0",
            (GLOBAL, FILTERED_GLOBAL),
        )
        if not rows:
            return []
        chosen: dict[str, bool] = {}
        for ae_title, target, lock, blob in rows:
            if (
                target == FILTERED_GLOBAL
                and blob
                and not matching.matches(decode_dataset(blob), ds)
            ):
                continue
            chosen[ae_title] = chosen.get(ae_title, False) or bool(lock)
        if not chosen:
            return []
        with self.store.transaction() as conn:
            conn.executemany(
                "INSERT OR IGNORE INTO subscriptions (ae_title, target, deletion_lock, "
                "created_at) VALUES (?, ?, ?, ?)",
                [(ae, uid, int(lock), utc_timestamp()) for ae, lock in chosen.items()],
            )
        return sorted(chosen)

    def purge(self, older_than: str) -> list[str]:
        """Delete COMPLETED/CANCELED workitems last changed before `older_than` (ISO UTC)
        that no subscriber locks, with their subscriptions; return their UIDs."""
        with self.store.transaction() as conn:
            uids = [
                r[0]
                for r in conn.execute(
                    "SELECT uid FROM workitems WHERE state IN ('COMPLETED', 'CANCELED') "
                    "AND updated_at < ? AND uid NOT IN "
                    "(SELECT target FROM subscriptions WHERE deletion_lock = 1)",
                    (older_than,),
                )
            ]
            for start in range(0, len(uids), 500):
                chunk = uids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                conn.execute(f"DELETE FROM subscriptions WHERE target IN ({marks})", chunk)
                conn.execute(f"DELETE FROM workitems WHERE uid IN ({marks})", chunk)
        return uids
