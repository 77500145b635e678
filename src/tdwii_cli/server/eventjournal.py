"""The N-EVENT-REPORTs not delivered yet, kept in the store so a restart loses none.

`EventSender` writes each report here when it is queued (`add`), deletes it once
the subscriber has answered it or it is given up (`remove`), and at start-up
queues again whatever is left (`pending`), oldest first. A report is journaled
right after the change that caused it is committed: only a crash between those
two commits can lose one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from pydicom.dataset import Dataset

from tdwii_cli.clock import utc_timestamp
from tdwii_cli.server.store import WorkitemStore, decode_dataset, encode_dataset


@dataclass(frozen=True)
class JournaledReport:
    """One report as the journal keeps it."""

    id: int
    ae_title: str
    event_type: int
    uid: str
    info: Dataset


class EventJournal:
    """The `event_queue` table of a `WorkitemStore`."""

    def __init__(self, store: WorkitemStore) -> None:
        self.store = store

    def add(self, ae_title: str, event_type: int, uid: str, info: Dataset) -> int:
        """Journal one report (committed on return); its id."""
        blob = encode_dataset(info)
        now = utc_timestamp()
        with self.store.transaction() as conn:
            cursor = conn.execute(
                "INSERT INTO event_queue (ae_title, event_type, uid, info, queued_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (ae_title, event_type, uid, blob, now),
            )
            return int(cursor.lastrowid or 0)

    def add_many(
        self, ae_title: str, event_type: int, reports: Iterable[tuple[str, Dataset]]
    ) -> list[int]:
        """Journal several reports in one transaction (one commit); their ids, in order."""
        now = utc_timestamp()
        ids: list[int] = []
        with self.store.transaction() as conn:
            for uid, info in reports:
                cursor = conn.execute(
                    "INSERT INTO event_queue (ae_title, event_type, uid, info, queued_at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (ae_title, event_type, uid, encode_dataset(info), now),
                )
                ids.append(int(cursor.lastrowid or 0))
        return ids

    def remove(self, ids: Iterable[int]) -> None:
        """Forget delivered or abandoned reports."""
        rows = [(i,) for i in ids]
        if not rows:
            return
        with self.store.transaction() as conn:
            conn.executemany("DELETE FROM event_queue WHERE id = ?", rows)

    def pending(self) -> list[JournaledReport]:
        """Every journaled report, oldest first."""
        rows = self.store.query(
            "SELECT id, ae_title, event_type, uid, info FROM event_queue ORDER BY id"
        )
        return [
            JournaledReport(int(i), str(ae), int(et), str(uid), decode_dataset(blob))
            for i, ae, et, uid, blob in rows
        ]

    def count(self) -> int:
        """How many reports wait in the journal."""
        return int(self.store.query("SELECT COUNT(*) FROM event_queue")[0][0])
