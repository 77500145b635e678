"""Local files: atomic writes (a temp file in the same folder, created with its final mode, then
renamed), the one reader of password files, and the warning for a private file that others
may read.

A private key is never readable by anyone else, not even for a moment: the temp
file is created 0600 by `os.open` before any byte is written. A set of files
(`write_files`) is staged completely before the first rename, so a failure while
staging leaves the folder as it was.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tdwii_cli.errors import TdwiiError

log = logging.getLogger("tdwii")

KEY_MODE = 0o600
PUBLIC_MODE = 0o644
DIR_MODE = 0o755


@dataclass(frozen=True)
class FileSpec:
    """One file to write: where, what, and its permission bits."""

    path: Path
    data: bytes
    mode: int = PUBLIC_MODE


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # not supported everywhere (e.g. some network file systems)
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def _stage(path: Path, data: bytes, mode: int) -> Path:
    """Write `data` to a new temp file next to `path` with `mode`; return the temp path."""
    tmp = path.with_name(f".{path.name}.{os.urandom(6).hex()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), mode)
    try:
        # The umask may have narrowed `mode`; set the exact bits before any data is written
        # (this never widens a key file: keys are created 0600 and stay 0600).
        os.fchmod(fd, mode)
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


def write_atomic(path: Path | str, data: bytes, mode: int = PUBLIC_MODE) -> None:
    """Replace `path` by `data` atomically (readers see the old or the new file, never half)."""
    path = Path(path)
    tmp = _stage(path, data, mode)
    try:
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def make_dirs(directory: Path, mode: int = DIR_MODE) -> list[Path]:
    """Create `directory` and missing parents; return the folders created (outermost first)."""
    created: list[Path] = []
    missing: list[Path] = []
    current = directory
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for folder in reversed(missing):
        os.mkdir(folder, mode)
        created.append(folder)
    return created


PRIVATE_DIR_MODE = 0o700


def create_private(path: Path) -> bool:
    """Make the missing folders of `path` (0700) and `path` itself (an empty file, exactly 0600
    whatever the umask) unless it exists; True when it existed already."""
    make_dirs(path.parent, PRIVATE_DIR_MODE)  # only the missing ones
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, KEY_MODE)
    except FileExistsError:
        return True
    os.fchmod(fd, KEY_MODE)
    os.close(fd)
    return False


def write_files(files: Sequence[FileSpec], remove: Iterable[Path] = ()) -> list[Path]:
    """Write several files as one step: stage every temp file, then rename them all.

    If staging fails (disk full, permission denied), the temp files and any
    folders made for them are removed and the exception propagates: nothing
    half-written is left. `remove` lists stale files deleted after the renames.
    Returns the paths written.
    """
    staged: list[tuple[Path, Path]] = []
    created_dirs: list[Path] = []
    try:
        for spec in files:
            created_dirs.extend(make_dirs(spec.path.parent))
            staged.append((_stage(spec.path, spec.data, spec.mode), spec.path))
    except BaseException:
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for folder in reversed(created_dirs):
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    for tmp, final in staged:
        os.replace(tmp, final)
    for stale in remove:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(stale)
    for folder in {final.parent for _, final in staged}:
        _fsync_dir(folder)
    return [final for _, final in staged]


def read_bytes(path: Path | str, what: str, *, missing_hint: str = "") -> bytes:
    """The bytes of a local file; one-line errors naming `what` it should be."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise TdwiiError(f"{what} {path} not found", hint=missing_hint) from None
    except IsADirectoryError:
        raise TdwiiError(f"{what} {path} is a folder, not a file") from None
    except OSError as exc:
        raise TdwiiError(f"cannot read {what} {path}: {exc.strerror}") from None


def read_password_file(path: Path | str, what: str = "password file") -> bytes:
    """The first line of a password file, as bytes; one-line errors that never show it."""
    lines = read_bytes(path, what).splitlines()
    password = lines[0] if lines else b""
    if not password:
        raise TdwiiError(f"{what} {path} is empty", hint="put the password on its first line")
    return password


def open_to_others(path: Path) -> int | None:
    """The permission bits of `path` when its group or others may use it, else None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except OSError:
        return None
    return mode if mode & 0o077 else None


def warn_if_open(paths: list[Path], what: str, holds: str) -> bool:
    """One warning line when any of `paths` (`what`, holding `holds`) is readable by others;
    True if one is."""
    open_ones = [(path, mode) for path in paths if (mode := open_to_others(path)) is not None]
    if not open_ones:
        return False
    modes = ", ".join(f"{path.name} {mode:04o}" for path, mode in open_ones)
    log.warning(
        "%s %s is readable by other users (%s): it holds %s; chmod 600 %s",
        what,
        paths[0],
        modes,
        holds,
        " ".join(str(path) for path, _ in open_ones),
    )
    return True
