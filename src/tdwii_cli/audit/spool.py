"""The audit spool: every audit message on disk until each destination has taken it.

One SQLite file (WAL), private (0600, its folder 0700 when made here): `messages` holds
the framed syslog messages in the order they were recorded (sequence numbers never
reused), `cursors` how far each destination has got (and, for a file destination, how
long the file was then). The file is held exclusively while tdwii runs. A
message is kept until every destination still configured has passed it. Commits use
`synchronous=NORMAL`: a committed message survives `kill -9` of the server (a power
cut may cost the last ones), and a commit costs no fsync on the DICOM path.

`add()` refuses a message when `limit` messages are waiting (the caller then raises the
alarm); `add(..., reserve=True)` may go past it by a few, for that alarm itself.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from tdwii_cli.fileio import create_private, warn_if_open

RESERVE = 16  # room past the limit for the spool's own alerts

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS messages (seq INTEGER PRIMARY KEY, body BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS cursors (
    destination TEXT PRIMARY KEY,
    sent INTEGER NOT NULL,
    file_size INTEGER
);
"""
_OURS = {"spool_meta", "messages", "cursors"}


class SpoolError(Exception):
    """The spool cannot be opened or used (one readable line)."""


class Spool:
    """See the module docstring."""

    def __init__(self, path: Path, destinations: list[str], limit: int) -> None:
        self.path = Path(path)
        self.limit = limit
        self.lock = threading.Lock()
        try:
            if self.path.is_dir():
                raise SpoolError(f"audit spool {self.path} is a folder")
            existed = create_private(self.path)
            self.conn = sqlite3.connect(
                str(self.path), isolation_level=None, check_same_thread=False, timeout=10
            )
        except OSError as exc:
            raise SpoolError(f"cannot create audit spool {self.path}: {exc.strerror}") from None
        try:
            names = {
                row[0]
                for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
            if names - _OURS:
                raise SpoolError(
                    f"audit spool {self.path} is a database of something else (tables "
                    f"{', '.join(sorted(names - _OURS))}); give --audit-spool a new file"
                )
            # ours alone while we run: no file locks taken and given back at each commit
            self.conn.execute("PRAGMA locking_mode=EXCLUSIVE")
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            self.conn.executescript(_SCHEMA)
            self.conn.execute(
                "INSERT OR IGNORE INTO spool_meta(key, value) VALUES ('version', '1')"
            )
            self._next = self._last_seq() + 1  # sequence numbers are never used twice
            self._start_cursors(destinations)
            self.destinations = list(destinations)
            self.count = int(self.conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0])
            self._trim()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            raise SpoolError(f"cannot use audit spool {self.path}: {exc}") from None
        except BaseException:
            self.conn.close()
            raise
        if existed:
            warn_if_open([self.path], "audit spool", "audit messages with patient names and IDs")

    def _start_cursors(self, destinations: list[str]) -> None:
        """A destination new to the spool starts before the oldest message kept, so that
        it gets what is still waiting for the others."""
        oldest = self.conn.execute("SELECT MIN(seq) FROM messages").fetchone()[0]
        start = (oldest - 1) if oldest is not None else self._next - 1
        for destination in destinations:
            self.conn.execute(
                "INSERT OR IGNORE INTO cursors(destination, sent) VALUES (?, ?)",
                (destination, start),
            )

    def _last_seq(self) -> int:
        """The last sequence number given: of the newest message kept, or of the last one a
        destination took (every message may have been taken and dropped)."""
        kept = self.conn.execute("SELECT MAX(seq) FROM messages").fetchone()[0]
        sent = self.conn.execute("SELECT MAX(sent) FROM cursors").fetchone()[0]
        return max(int(kept or 0), int(sent or 0))

    # -- recording -------------------------------------------------------------------------

    def add(self, body: bytes, *, reserve: bool = False) -> bool:
        """Keep `body` for every destination; False (nothing kept) when the spool is full."""
        return self.add_many([(body, reserve)]) == 1

    def add_many(self, bodies: list[tuple[bytes, bool]]) -> int:
        """Keep each (body, reserved) in order, in one commit, while there is room (up to
        `limit`, or past it by `RESERVE` for a reserved one); how many were kept."""
        with self.lock:
            kept: list[tuple[int, bytes]] = []
            for body, reserved in bodies:
                if self.count + len(kept) < self.limit + (RESERVE if reserved else 0):
                    kept.append((self._next + len(kept), body))
            if not kept:
                return 0
            if len(kept) == 1:
                self.conn.execute("INSERT INTO messages(seq, body) VALUES (?, ?)", kept[0])
            else:
                self.conn.execute("BEGIN")
                try:
                    self.conn.executemany("INSERT INTO messages(seq, body) VALUES (?, ?)", kept)
                    self.conn.execute("COMMIT")
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
            self._next += len(kept)
            self.count += len(kept)
            return len(kept)

    @property
    def full(self) -> bool:
        return self.count >= self.limit

    # -- sending -------------------------------------------------------------------------

    def cursor(self, destination: str) -> tuple[int, int | None]:
        """(last sequence number sent, file size then) of `destination`."""
        with self.lock:
            row = self.conn.execute(
                "SELECT sent, file_size FROM cursors WHERE destination = ?", (destination,)
            ).fetchone()
        return (int(row[0]), row[1]) if row else (0, None)

    def batch(self, destination: str, limit: int = 256) -> list[tuple[int, bytes]]:
        """The next messages `destination` has not taken yet, oldest first."""
        with self.lock:
            rows = self.conn.execute(
                "SELECT seq, body FROM messages WHERE seq > "
                "(SELECT sent FROM cursors WHERE destination = ?) ORDER BY seq LIMIT ?",
                (destination, limit),
            ).fetchall()
        return [(int(seq), bytes(body)) for seq, body in rows]

    def waiting(self, destination: str) -> int:
        """How many messages `destination` has not taken yet."""
        with self.lock:
            row = self.conn.execute(
                "SELECT COUNT(*) FROM messages WHERE seq > "
                "(SELECT sent FROM cursors WHERE destination = ?)",
                (destination,),
            ).fetchone()
        return int(row[0])

    def sent(self, destination: str, seq: int, file_size: int | None = None) -> None:
        """`destination` has taken every message up to `seq`; drop what all have taken."""
        with self.lock:
            self.conn.execute(
                "UPDATE cursors SET sent = ?, file_size = ? WHERE destination = ?",
                (seq, file_size, destination),
            )
            self._trim()

    def _trim(self) -> None:
        marks = list(self.destinations)
        if not marks:
            return
        placeholders = ",".join("?" * len(marks))
        low = self.conn.execute(
            f"SELECT MIN(sent) FROM cursors WHERE destination IN ({placeholders})", marks
        ).fetchone()[0]
        if low is None:
            return
        deleted = self.conn.execute("DELETE FROM messages WHERE seq <= ?", (low,)).rowcount
        self.count -= max(0, deleted)

    def close(self) -> None:
        with self.lock:
            self.conn.close()
