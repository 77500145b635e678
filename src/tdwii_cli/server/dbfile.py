"""The database file at rest: private from the first byte, and never someone else's.

The workitems hold patient names and IDs. `prepare()` runs before SQLite opens the
file: a missing folder is made 0700 and a missing file 0600 (SQLite gives its `-wal`
and `-shm` files the database file's mode), and an existing file, or its `-wal`/`-shm`,
that others may read is warned about. `check_ours()` refuses a SQLite database that
belongs to something else, before anything is written to it.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tdwii_cli.fileio import PRIVATE_DIR_MODE, create_private, warn_if_open

__all__ = ["PRIVATE_DIR_MODE", "check_ours", "prepare", "warn_open_files"]

_COMPANIONS = ("", "-wal", "-shm")


def prepare(path: Path) -> bool:
    """Make the missing folders (0700) and the missing file (0600) of database `path`; True
    when the file existed already (then call `warn_open_files` once it proved a database)."""
    return create_private(path)


def warn_open_files(path: Path) -> None:
    """Warn about database `path` and its `-wal`/`-shm` files where others may read them."""
    files = [Path(f"{path}{suffix}") for suffix in _COMPANIONS]
    warn_if_open(files, "database", "patient names and IDs")


def check_ours(conn: sqlite3.Connection, path: Path) -> None:
    """Raise ValueError (one line) unless the database on `conn` is empty or tdwii's (it has
    tdwii's `workitems` table and its `meta` table with a schema version)."""
    names = {
        row[0]
        for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') "
            "AND name NOT LIKE 'sqlite_%'"
        )
    }
    if not names:
        return
    if _versioned(conn, names):
        return
    shown = ", ".join(sorted(names)[:6]) + (", ..." if len(names) > 6 else "")
    raise ValueError(
        f"database {path} belongs to something else (its tables: {shown}); "
        "give --db a new file or an existing tdwii database"
    )


def _versioned(conn: sqlite3.Connection, names: set[str]) -> bool:
    """tdwii's tables are there and its `meta` table holds a schema version."""
    if not {"meta", "workitems"} <= names:
        return False
    if not {"key", "value"} <= {row[1] for row in conn.execute("PRAGMA table_info(meta)")}:
        return False
    return conn.execute("SELECT 1 FROM meta WHERE key='schema_version'").fetchone() is not None
