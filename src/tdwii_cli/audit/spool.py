"""The audit spool: every audit message on disk until each destination has taken it.

A private folder (0700; its files 0600) holding an append-only log: segment files
`<first sequence number>.seg` of records (sequence number, length, CRC-32, the framed
syslog message), and `cursors.json`, how far each destination has got (and, for a file
destination, how long that file was then). Appending a batch is one `write()`: a message
in the spool survives a `kill -9` at once, and costs no fsync on the way (a power cut may
cost the last ones: a record cut short is found by its length and CRC at the next start
and cut off). `cursors.json` is replaced atomically after each batch a destination
takes. A segment is deleted once every destination still configured has passed it.
The folder is locked while a server uses it.

`add_many()` keeps a message only while fewer than `limit` wait for the slowest
destination (the caller raises the alarm); a reserved one may go past it by `RESERVE`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import struct
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tdwii_cli.fileio import KEY_MODE, PRIVATE_DIR_MODE, make_dirs, warn_if_open

RESERVE = 16  # room past the limit for the spool's own alerts
SEGMENT_BYTES = 8 << 20  # a new segment after this many bytes
_RECORD = struct.Struct("<QII")  # sequence number, length of the body, CRC-32 of the body
_CHUNK = 1 << 18  # read this much of a segment at a time
_CURSORS = "cursors.json"
_LOCK = "lock"


class SpoolError(Exception):
    """The spool cannot be opened or used (one readable line)."""


@dataclass
class _Cursor:
    sent: int  # the last sequence number the destination has taken
    file_size: int | None = None  # a file destination's length after it
    segment: int = 0  # where the record after `sent` is: its segment's first number ...
    offset: int = 0  # ... and its offset there (segment 0: to be found)
    ahead: tuple[int, int, int] | None = None  # the last batch: its last number, where it ends


def _segment_name(first: int) -> str:
    return f"{first:020d}.seg"


class Spool:
    """See the module docstring."""

    def __init__(self, path: Path, destinations: list[str], limit: int) -> None:
        self.path = Path(path)
        self.limit = limit
        self.destinations = list(destinations)
        self.lock = threading.Lock()
        self._fds: dict[int, int] = {}  # segment -> open descriptor (read and append)
        try:
            existed = self.path.exists()
            if existed and not self.path.is_dir():
                raise SpoolError(
                    f"audit spool {self.path} is not a folder; give --audit-spool a new path"
                )
            if existed:
                self._refuse_foreign()
            make_dirs(self.path, PRIVATE_DIR_MODE)
            self._lock_fd = os.open(self.path / _LOCK, os.O_RDWR | os.O_CREAT, KEY_MODE)
        except OSError as exc:
            raise SpoolError(f"cannot create audit spool {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise SpoolError(f"audit spool {self.path} is in use by another tdwii serve") from None
        try:
            self._open(existed)
        except BaseException:
            self._close_files()
            raise

    # -- opening ---------------------------------------------------------------------------

    def _refuse_foreign(self) -> None:
        """A folder that holds anything but a spool's files is someone else's: untouched."""
        foreign = sorted(
            p.name
            for p in self.path.iterdir()
            if p.name not in (_CURSORS, _LOCK, f"{_CURSORS}.tmp") and not p.name.endswith(".seg")
        )
        if foreign:
            shown = ", ".join(foreign[:4])
            raise SpoolError(
                f"audit spool {self.path} holds files that are not a spool's ({shown}); "
                "give --audit-spool a new folder"
            )

    def _open(self, existed: bool) -> None:
        names = {p.name for p in self.path.iterdir()}
        if existed:
            warn_if_open(
                [self.path / n for n in sorted(names)],
                "audit spool",
                "audit messages with patient names and IDs",
            )
        self.segments = sorted(
            int(n[:-4]) for n in names if n.endswith(".seg") and n[:-4].isdigit()
        )
        cursors = self._read_cursors()
        last = self._recover_last_segment()
        self._next = max([last, *(c.sent for c in cursors.values())], default=0) + 1
        oldest = self.segments[0] if self.segments else self._next
        self.cursors = {}
        for destination in self.destinations:
            known = cursors.get(destination)
            if known is None or known.sent < oldest - 1:  # new here: what still waits is its
                known = _Cursor(oldest - 1, known.file_size if known else None)
            self.cursors[destination] = known
        if not self.segments or self._size(self.segments[-1]) >= SEGMENT_BYTES:
            self._new_segment()
        self.count = self._next - 1 - self._slowest()
        self._write_cursors()

    def _read_cursors(self) -> dict[str, _Cursor]:
        path = self.path / _CURSORS
        try:
            data = json.loads(path.read_text())
            return {
                str(name): _Cursor(int(entry["sent"]), entry.get("file_size"))
                for name, entry in data.items()
            }
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise SpoolError(
                f"audit spool {self.path}: {_CURSORS} cannot be read; move the folder aside "
                "(its segments hold the messages not sent)"
            ) from None

    def _fd(self, segment: int) -> int:
        fd = self._fds.get(segment)
        if fd is None:
            fd = os.open(
                self.path / _segment_name(segment),
                os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                KEY_MODE,
            )
            self._fds[segment] = fd
        return fd

    def _size(self, segment: int) -> int:
        return os.fstat(self._fd(segment)).st_size

    def _recover_last_segment(self) -> int:
        """The last sequence number kept; a record cut short at the end is cut off."""
        if not self.segments:
            return 0
        segment = self.segments[-1]
        last, good = segment - 1, 0
        for seq, _body, end in self._records(segment, 0):
            last, good = seq, end
        if good < self._size(segment):
            os.ftruncate(self._fd(segment), good)
        return last

    def _records(
        self, segment: int, offset: int, limit: int | None = None
    ) -> Iterator[tuple[int, bytes, int]]:
        """(sequence number, body, end offset) of the whole records from `offset` on, read
        a chunk at a time."""
        fd = self._fd(segment)
        size = os.fstat(fd).st_size
        count = 0
        chunk, base = b"", offset  # chunk holds the file from `base` on
        while offset + _RECORD.size <= size and (limit is None or count < limit):
            if offset + _RECORD.size > base + len(chunk):
                chunk, base = os.pread(fd, max(_CHUNK, _RECORD.size), offset), offset
            at = offset - base
            seq, length, crc = _RECORD.unpack_from(chunk, at)
            end = offset + _RECORD.size + length
            if end > size:
                return
            if end > base + len(chunk):
                chunk, base = os.pread(fd, max(_CHUNK, end - offset), offset), offset
                at = 0
            body = chunk[at + _RECORD.size : at + _RECORD.size + length]
            if len(body) != length or zlib.crc32(body) != crc:
                return
            yield seq, body, end
            offset = end
            count += 1

    def _new_segment(self) -> None:
        self.segments.append(self._next)
        self._fd(self._next)

    # -- recording -------------------------------------------------------------------------

    def add(self, body: bytes, *, reserve: bool = False) -> bool:
        """Keep `body` for every destination; False (nothing kept) when the spool is full."""
        return self.add_many([(body, reserve)]) == 1

    def add_many(self, bodies: list[tuple[bytes, bool]]) -> int:
        """Keep each (body, reserved) in order, in one write, while there is room (up to
        `limit`, or past it by `RESERVE` for a reserved one); how many were kept."""
        with self.lock:
            records: list[bytes] = []
            for body, reserved in bodies:
                if self.count + len(records) < self.limit + (RESERVE if reserved else 0):
                    seq = self._next + len(records)
                    records.append(_RECORD.pack(seq, len(body), zlib.crc32(body)) + body)
            if not records:
                return 0
            segment = self.segments[-1]
            fd = self._fd(segment)
            start = os.fstat(fd).st_size
            data = memoryview(b"".join(records))
            try:
                while data:
                    data = data[os.write(fd, data) :]
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, start)  # no record cut short stays behind
                raise
            self._next += len(records)
            self.count += len(records)
            if os.fstat(fd).st_size >= SEGMENT_BYTES:
                self._new_segment()
            return len(records)

    @property
    def full(self) -> bool:
        return self.count >= self.limit

    # -- sending ---------------------------------------------------------------------------

    def cursor(self, destination: str) -> tuple[int, int | None]:
        """(last sequence number sent, file size then) of `destination`."""
        with self.lock:
            cursor = self.cursors[destination]
            return cursor.sent, cursor.file_size

    def batch(self, destination: str, limit: int = 256) -> list[tuple[int, bytes]]:
        """The next messages `destination` has not taken yet, oldest first (the same again
        until `sent()` says they are taken)."""
        with self.lock:
            cursor = self.cursors[destination]
            if cursor.sent + 1 >= self._next:
                return []
            if cursor.segment == 0:
                self._position(cursor)
            segment, offset = cursor.segment, cursor.offset
            out: list[tuple[int, bytes]] = []
            while len(out) < limit:
                want = limit - len(out)
                found = list(self._records(segment, offset, want))
                if found:
                    out.extend((seq, body) for seq, body, _end in found if seq > cursor.sent)
                    offset = found[-1][2]
                if len(found) == want:
                    break
                later = [s for s in self.segments if s > segment]
                if not later:
                    break
                segment, offset = later[0], 0
            cursor.ahead = (out[-1][0], segment, offset) if out else None
            return out

    def _position(self, cursor: _Cursor) -> None:
        """Find where the record after `cursor.sent` is (a scan of its segment)."""
        wanted = cursor.sent + 1
        candidates = [s for s in self.segments if s <= wanted] or self.segments[:1]
        segment = candidates[-1]
        offset = 0
        for seq, _body, end in self._records(segment, 0):
            if seq >= wanted:
                break
            offset = end
        cursor.segment, cursor.offset = segment, offset

    def waiting(self, destination: str) -> int:
        """How many messages `destination` has not taken yet."""
        with self.lock:
            return max(0, self._next - 1 - self.cursors[destination].sent)

    def sent(self, destination: str, seq: int, file_size: int | None = None) -> None:
        """`destination` has taken every message up to `seq`; segments all have passed go."""
        with self.lock:
            cursor = self.cursors[destination]
            if cursor.ahead is not None and cursor.ahead[0] == seq:
                _last, cursor.segment, cursor.offset = cursor.ahead  # where that batch ended
            elif seq != cursor.sent:
                cursor.segment = 0  # found again from `sent` at the next batch
            cursor.ahead = None
            cursor.sent, cursor.file_size = max(cursor.sent, seq), file_size
            self._write_cursors()
            self.count = self._next - 1 - self._slowest()
            self._trim()

    def _slowest(self) -> int:
        return min((c.sent for c in self.cursors.values()), default=self._next - 1)

    def _trim(self) -> None:
        slowest = self._slowest()
        while len(self.segments) > 1 and self.segments[1] - 1 <= slowest:
            gone = self.segments.pop(0)
            for cursor in self.cursors.values():
                if cursor.segment == gone:
                    cursor.segment = 0
            fd = self._fds.pop(gone, None)
            if fd is not None:
                os.close(fd)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path / _segment_name(gone))

    def _write_cursors(self) -> None:
        """cursors.json replaced atomically (rename: a `kill -9` leaves the old or the new)."""
        data = {
            name: {"sent": c.sent, "file_size": c.file_size} for name, c in self.cursors.items()
        }
        tmp = self.path / f"{_CURSORS}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, KEY_MODE)
        try:
            os.write(fd, json.dumps(data).encode())
        finally:
            os.close(fd)
        os.replace(tmp, self.path / _CURSORS)

    def close(self) -> None:
        with self.lock:
            with contextlib.suppress(OSError):
                self._write_cursors()
            self._close_files()

    def _close_files(self) -> None:
        for fd in self._fds.values():
            with contextlib.suppress(OSError):
                os.close(fd)
        self._fds.clear()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
