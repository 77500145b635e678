"""The durable workitem store: one SQLite database in WAL mode with `synchronous=FULL`.

Each UPS is kept whole (its dataset encoded Explicit VR Little Endian, without
the Transaction UID, which lives in its own column and is never returned by
N-GET) next to indexed columns for the C-FIND matching keys.

Durability: every write commits before the method returns, with
`synchronous=FULL`, so once the server has sent a Success response the
workitem survives a `kill -9` or a power cut. SQLite's WAL keeps the file
consistent whatever moment the process dies.

Concurrency: one writer connection (`conn`, `check_same_thread=False`) guarded
by `lock` (an `RLock`); `transaction()` holds the lock for a read-check-write
sequence (`BEGIN IMMEDIATE` .. `COMMIT`). `select()` streams from a separate
read-only connection so a long C-FIND never holds the writer (WAL readers do
not block writers); inside `transaction()` it reads on the writer connection
so the caller sees its own uncommitted changes.

At rest (`tdwii_cli.server.dbfile`): a new file is 0600 (its folder 0700 when made here),
an existing one open to others is warned about, and a database of something else is refused.

Schema changes: append SQL scripts to `MIGRATIONS`; `meta.schema_version` is
the number already applied, and a newer database than the code is refused.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Generator, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from tdwii_cli.clock import utc_timestamp
from tdwii_cli.dicom import codec, tags
from tdwii_cli.dicom.values import normalise_dt
from tdwii_cli.server import dbfile
from tdwii_cli.ups.ncreate import attribute_text, plain_code

__all__ = [
    "MIGRATIONS",
    "DuplicateWorkitem",
    "NoSuchWorkitem",
    "StoreError",
    "Workitem",
    "WorkitemStore",
    "code_key",
    "decode_dataset",
    "encode_dataset",
]

MIGRATIONS: list[str] = [
    # 1: the workitems table and its matching-key indexes
    """
    CREATE TABLE workitems (
        uid TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        transaction_uid TEXT,
        performer_ae TEXT,
        scheduled_start TEXT NOT NULL DEFAULT '',
        patient_id TEXT NOT NULL DEFAULT '',
        patient_name TEXT NOT NULL DEFAULT '',
        worklist_label TEXT NOT NULL DEFAULT '',
        input_readiness TEXT NOT NULL DEFAULT '',
        priority TEXT NOT NULL DEFAULT '',
        station_code TEXT NOT NULL DEFAULT '',
        workitem_code TEXT NOT NULL DEFAULT '',
        dataset BLOB NOT NULL,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE INDEX workitems_state ON workitems(state);
    CREATE INDEX workitems_scheduled_start ON workitems(scheduled_start);
    CREATE INDEX workitems_patient_id ON workitems(patient_id);
    CREATE INDEX workitems_station_code ON workitems(station_code);
    CREATE INDEX workitems_worklist_label ON workitems(worklist_label);
    """,
    # 2: UPS subscriptions (tdwii_cli.server.subscriptions) and the delivery device's usual query
    """
    CREATE TABLE subscriptions (
        ae_title TEXT NOT NULL,
        target TEXT NOT NULL,
        deletion_lock INTEGER NOT NULL DEFAULT 0,
        filter BLOB,
        suspended INTEGER NOT NULL DEFAULT 0,
        created_at TEXT NOT NULL,
        PRIMARY KEY (ae_title, target)
    );
    CREATE INDEX subscriptions_target ON subscriptions(target);
    CREATE INDEX workitems_station_state_start ON workitems(station_code, state, scheduled_start);
    """,
    # 3: N-EVENT-REPORTs not delivered yet (tdwii_cli.server.eventjournal), kept across restarts
    """
    CREATE TABLE event_queue (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        ae_title TEXT NOT NULL,
        event_type INTEGER NOT NULL,
        uid TEXT NOT NULL,
        info BLOB NOT NULL,
        queued_at TEXT NOT NULL
    );
    CREATE INDEX event_queue_ae ON event_queue(ae_title, id);
    """,
]

_COLUMNS = "uid, state, transaction_uid, performer_ae, dataset"
_UNSET: Any = object()


class StoreError(Exception):
    """The database cannot be opened or used (message is one readable line)."""


class DuplicateWorkitem(StoreError):
    """A workitem with this SOP Instance UID exists already (N-CREATE status 0111)."""


class NoSuchWorkitem(StoreError):
    """No workitem with this SOP Instance UID (status C307)."""


def code_key(ds: Dataset, keyword: str) -> str:
    """'CodeValue^CodingSchemeDesignator' of the first item of code sequence `keyword` ('')."""
    fast = plain_code(ds, keyword)
    if fast is not None:
        return fast
    seq = ds.get(keyword)
    if not seq:
        return ""
    item = seq[0]
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue") or ""
    scheme = item.get("CodingSchemeDesignator") or ""
    return f"{value}^{scheme}" if value or scheme else ""


def encode_dataset(ds: Dataset) -> bytes:
    """`ds` encoded Explicit VR Little Endian, without the Transaction UID."""
    if tags.TRANSACTION_UID in ds:
        ds = ds.copy()
        del ds[tags.TRANSACTION_UID]
    return codec.encode(ds)


def decode_dataset(blob: bytes) -> Dataset:
    """The dataset stored by `encode_dataset`."""
    return codec.decode(blob)


def _index_columns(ds: Dataset) -> dict[str, str]:
    return {
        "scheduled_start": normalise_dt(ds.get("ScheduledProcedureStepStartDateTime")),
        "patient_id": attribute_text(ds, "PatientID"),
        "patient_name": attribute_text(ds, "PatientName"),
        "worklist_label": attribute_text(ds, "WorklistLabel"),
        "input_readiness": attribute_text(ds, "InputReadinessState"),
        "priority": attribute_text(ds, "ScheduledProcedureStepPriority"),
        "station_code": code_key(ds, "ScheduledStationNameCodeSequence"),
        "workitem_code": code_key(ds, "ScheduledWorkitemCodeSequence"),
    }


@dataclass
class Workitem:
    """One stored UPS. `dataset` never holds the Transaction UID (see `transaction_uid`)."""

    uid: str
    state: str
    transaction_uid: str | None
    performer_ae: str | None
    blob: bytes = field(repr=False)
    _dataset: Dataset | None = field(default=None, repr=False)

    @property
    def dataset(self) -> Dataset:
        """The stored attributes (decoded on first use)."""
        if self._dataset is None:
            self._dataset = decode_dataset(self.blob)
        return self._dataset


def _row(row: tuple[Any, ...]) -> Workitem:
    return Workitem(
        uid=row[0], state=row[1], transaction_uid=row[2], performer_ae=row[3], blob=bytes(row[4])
    )


class WorkitemStore:
    """The UPS workitems in one SQLite file (created with its schema on first use)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.lock = threading.RLock()
        self._tx_owner: int | None = None
        self._readers: list[sqlite3.Connection] = []
        self._closed = False
        try:
            if self.path.is_dir():
                raise StoreError(f"database {self.path} is a directory")
            existed = dbfile.prepare(self.path)
            self.conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=10
            )
            try:
                dbfile.check_ours(self.conn, self.path)
            except ValueError as exc:
                raise StoreError(str(exc)) from None
            mode = self.conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"database {self.path}: cannot use WAL mode ({mode})")
            self.conn.execute("PRAGMA synchronous=FULL")
            self._migrate()
        except BaseException as exc:
            if hasattr(self, "conn"):
                self.conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise StoreError(f"cannot open database {self.path}: {exc}") from None
            if isinstance(exc, OSError):
                why = exc.strerror or str(exc)
                raise StoreError(f"cannot create database {self.path}: {why}") from None
            raise
        if existed:
            dbfile.warn_open_files(self.path)

    # -- schema ---------------------------------------------------------------

    def _migrate(self) -> None:
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                self.conn.execute(
                    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                )
                row = self.conn.execute(
                    "SELECT value FROM meta WHERE key='schema_version'"
                ).fetchone()
                version = int(row[0]) if row else 0
                if version > len(MIGRATIONS):
                    raise StoreError(
                        f"database {self.path} has schema version {version}, newer than this "
                        f"tdwii ({len(MIGRATIONS)})"
                    )
                for script in MIGRATIONS[version:]:
                    for statement in script.split(";"):
                        if statement.strip():
                            self.conn.execute(statement)
                self.conn.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', ?)",
                    (str(len(MIGRATIONS)),),
                )
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise

    @property
    def schema_version(self) -> int:
        """The number of `MIGRATIONS` applied to this database."""
        with self.lock:
            row = self.conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
        return int(row[0])

    # -- transactions ---------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """Hold the writer for a read-check-write sequence (BEGIN IMMEDIATE .. COMMIT).

        Nested use in the same thread joins the outer transaction. On an
        exception everything is rolled back and the exception propagates.
        """
        with self.lock:
            if self._tx_owner == threading.get_ident():
                yield self.conn
                return
            self.conn.execute("BEGIN IMMEDIATE")
            self._tx_owner = threading.get_ident()
            try:
                yield self.conn
            except BaseException:
                self._tx_owner = None
                self.conn.execute("ROLLBACK")
                raise
            self._tx_owner = None
            self.conn.execute("COMMIT")

    # -- writes ---------------------------------------------------------------

    def create(
        self,
        ds: Dataset,
        *,
        transaction_uid: str | None = None,
        index_from: Dataset | None = None,
        encoded: bytes | None = None,
    ) -> None:
        """Store a new workitem (its UID is `ds.SOPInstanceUID`); committed on return.

        `index_from`: a copy of `ds` whose values are decoded already (the indexed
        columns are read from it; `ds` is then written without decoding its values).
        `encoded`: `ds` already in the stored form (`encode_dataset`'s), kept as is.
        Raises `DuplicateWorkitem` when the UID exists already.
        """
        uid = attribute_text(ds, "SOPInstanceUID")
        if not uid:
            raise StoreError("workitem without SOP Instance UID")
        state = attribute_text(ds, "ProcedureStepState") or "SCHEDULED"
        # first: values not yet decoded are written as they are
        blob = encoded if encoded is not None else encode_dataset(ds)
        columns = _index_columns(index_from if index_from is not None else ds)
        now = utc_timestamp()
        with self.transaction() as conn:
            try:
                conn.execute(
                    "INSERT INTO workitems (uid, state, transaction_uid, performer_ae, "
                    "scheduled_start, patient_id, patient_name, worklist_label, input_readiness, "
                    "priority, station_code, workitem_code, dataset, created_at, updated_at) "
                    "VALUES (?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        uid,
                        state,
                        transaction_uid or None,
                        columns["scheduled_start"],
                        columns["patient_id"],
                        columns["patient_name"],
                        columns["worklist_label"],
                        columns["input_readiness"],
                        columns["priority"],
                        columns["station_code"],
                        columns["workitem_code"],
                        blob,
                        now,
                        now,
                    ),
                )
            except sqlite3.IntegrityError:
                raise DuplicateWorkitem(f"workitem {uid} exists already") from None

    def update(
        self,
        uid: str,
        ds: Dataset,
        *,
        state: str | None = None,
        transaction_uid: str | None = _UNSET,
        performer_ae: str | None = _UNSET,
    ) -> None:
        """Replace workitem `uid`'s dataset (and state / Transaction UID / performer if given).

        `state` defaults to the dataset's Procedure Step State. Pass
        `transaction_uid=None` to clear it; leave it out to keep it. Raises
        `NoSuchWorkitem`.
        """
        state = state or attribute_text(ds, "ProcedureStepState")
        columns = _index_columns(ds)
        sets = ["dataset = ?", "updated_at = ?"] + [f"{name} = ?" for name in columns]
        params: list[Any] = [encode_dataset(ds), utc_timestamp(), *columns.values()]
        if state:
            sets.append("state = ?")
            params.append(state)
        if transaction_uid is not _UNSET:
            sets.append("transaction_uid = ?")
            params.append(transaction_uid or None)
        if performer_ae is not _UNSET:
            sets.append("performer_ae = ?")
            params.append(performer_ae or None)
        with self.transaction() as conn:
            cursor = conn.execute(
                f"UPDATE workitems SET {', '.join(sets)} WHERE uid = ?", (*params, uid)
            )
            if cursor.rowcount == 0:
                raise NoSuchWorkitem(f"no workitem {uid}")

    # -- reads ----------------------------------------------------------------

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """The rows of one read on the writer connection (sees this thread's transaction)."""
        with self.lock:
            return self.conn.execute(sql, params).fetchall()

    def get(self, uid: str) -> Workitem | None:
        """Workitem `uid`, or None."""
        with self.lock:
            row = self.conn.execute(
                f"SELECT {_COLUMNS} FROM workitems WHERE uid = ?", (uid,)
            ).fetchone()
        return _row(row) if row else None

    def count(self, where: str = "1", params: Sequence[Any] = ()) -> int:
        """Number of workitems matching the SQL condition `where`."""
        with self.lock:
            return int(
                self.conn.execute(
                    f"SELECT COUNT(*) FROM workitems WHERE {where}", params
                ).fetchone()[0]
            )

    def select(
        self, where: str = "1", params: Sequence[Any] = ()
    ) -> Generator[Workitem, None, None]:
        """Workitems matching the SQL condition `where` (with `?` `params`), streamed.

        Ordered by scheduled start then UID. Outside `transaction()` the rows
        come from a read-only connection (a consistent snapshot that does not
        block writers); close the iterator (or exhaust it) to release it.
        """
        sql = f"SELECT {_COLUMNS} FROM workitems WHERE {where} ORDER BY scheduled_start, uid"
        if self._tx_owner == threading.get_ident():
            with self.lock:
                rows = self.conn.execute(sql, params).fetchall()
            yield from (_row(r) for r in rows)
            return
        reader = self._take_reader()
        try:
            reader.execute("BEGIN")
            try:
                cursor = reader.execute(sql, params)
                while True:
                    batch = cursor.fetchmany(64)
                    if not batch:
                        break
                    for r in batch:
                        yield _row(r)
            finally:
                reader.execute("COMMIT")
        finally:
            self._give_back(reader)

    def _take_reader(self) -> sqlite3.Connection:
        with self.lock:
            if self._closed:
                raise StoreError("the workitem store is closed")
            if self._readers:
                return self._readers.pop()
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        return sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)

    def _give_back(self, reader: sqlite3.Connection) -> None:
        with self.lock:
            if not self._closed and len(self._readers) < 8:
                self._readers.append(reader)
                return
        reader.close()

    def close(self) -> None:
        """Close every connection (checkpointing the WAL into the main file)."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            for reader in self._readers:
                reader.close()
            self._readers.clear()
            with suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.conn.close()

    def __enter__(self) -> WorkitemStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
