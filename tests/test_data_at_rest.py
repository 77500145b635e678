"""Data at rest: the workitem database, its `-wal`/`-shm` and a folder tdwii makes are private
(0600/0700, whatever the umask); an existing database others may read is warned about; a SQLite
database of something else, or a file that is no database, is refused with one line and left
exactly as it was. Each through a real `tdwii serve` process."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from conftest import one_error_line, start_tdwii_server


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


def _serve_fails(workdir: Path, db: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "serve", "--mtls", "-p", "0", "--db", str(db)],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_new_database_and_its_folder_are_private(tmp_path: Path, pki_dir: Path) -> None:
    (tmp_path / "certs").symlink_to(pki_dir)
    db = tmp_path / "state" / "deep" / "ups.sqlite"
    old = os.umask(0o022)  # the usual umask, which leaves new files 0644
    try:
        server = start_tdwii_server(tmp_path, db=db)
    finally:
        os.umask(old)
    try:
        wal, shm = Path(f"{db}-wal"), Path(f"{db}-shm")
        assert wal.exists() and shm.exists()
        assert [_mode(p) for p in (db, wal, shm)] == [0o600] * 3
        assert _mode(db.parent) == 0o700 and _mode(db.parent.parent) == 0o700
        assert "readable by other users" not in server.log_text()
    finally:
        server.stop()


def test_an_existing_database_others_can_read_is_warned_about(
    tmp_path: Path, pki_dir: Path
) -> None:
    (tmp_path / "certs").symlink_to(pki_dir)
    db = tmp_path / "ups.sqlite"
    start_tdwii_server(tmp_path, db=db).stop()
    os.chmod(db, 0o644)
    server = start_tdwii_server(tmp_path, db=db)
    try:
        log = server.log_text()
    finally:
        server.stop()
    warning = [line for line in log.splitlines() if "readable by other users" in line]
    assert len(warning) == 1, log  # one line for the file and its -wal/-shm
    assert "WARNING" in warning[0] and "ups.sqlite 0644" in warning[0]
    assert "patient names and IDs" in warning[0] and f"chmod 600 {db}" in warning[0]


def test_a_foreign_sqlite_database_is_refused_and_left_alone(tmp_path: Path, pki_dir: Path) -> None:
    (tmp_path / "certs").symlink_to(pki_dir)
    db = tmp_path / "billing.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, amount REAL)")
        conn.execute("INSERT INTO invoices (amount) VALUES (12.5)")
    conn.close()
    before = db.read_bytes()
    proc = _serve_fails(tmp_path, db)
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc)
    assert "belongs to something else" in line and "invoices" in line and str(db) in line
    assert db.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["billing.db", "certs"]  # no -wal


def test_an_empty_sqlite_file_or_a_zero_byte_file_is_adopted(tmp_path: Path, pki_dir: Path) -> None:
    (tmp_path / "certs").symlink_to(pki_dir)
    empty = tmp_path / "empty.sqlite"
    sqlite3.connect(empty).close()  # a SQLite file with no tables (zero bytes)
    server = start_tdwii_server(tmp_path, db=empty)
    server.stop()
    with sqlite3.connect(empty) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert {"workitems", "meta"} <= names


def test_a_file_that_is_no_database_is_one_line_and_unchanged(
    tmp_path: Path, pki_dir: Path
) -> None:
    (tmp_path / "certs").symlink_to(pki_dir)
    notes = tmp_path / "notes.txt"
    notes.write_text("patient list, do not lose\n" * 200)
    before = notes.read_bytes()
    proc = _serve_fails(tmp_path, notes)
    assert proc.returncode == 1
    assert "file is not a database" in one_error_line(proc) and "Traceback" not in proc.stderr
    assert notes.read_bytes() == before
