"""DICOM files: walk paths, read Part 10 (or raw) datasets, write Part 10 files.

`iter_paths` expands files and folders (recursively, in a stable sorted order,
skipping hidden files such as `.DS_Store` and editor droppings); `list_files` also
passes over the files found in a folder that are plainly not DICOM; `read_dataset`
reads one file with pydicom and raises `NotDicomError` with a readable reason
when it is not DICOM. `load_datasets` does both and returns what was read and
what was skipped, so a command can report the skipped files one line each.
`write_part10` writes a data set as a Part 10 file (Explicit VR Little Endian).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from tdwii_cli.dicom.uids import (
    EXPLICIT_VR_LE,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
    UPS_PUSH,
)
from tdwii_cli.fileio import write_atomic


class NotDicomError(Exception):
    """The file is not a DICOM dataset (the message says why)."""


@dataclass
class Loaded:
    """A dataset read from `path`."""

    path: Path
    dataset: Dataset


@dataclass
class Skipped:
    """A file that could not be used, and why."""

    path: Path
    reason: str


def iter_paths(paths: Iterable[Path | str]) -> Iterator[Path]:
    """Files named in `paths`, folders walked recursively (sorted; hidden entries skipped).

    A path that does not exist is yielded as is, so the caller reports it.
    """
    for path, _named in _walk(paths):
        yield path


def _walk(paths: Iterable[Path | str]) -> Iterator[tuple[Path, bool]]:
    """`iter_paths`, each with True when it was named (False: found in a folder)."""
    for raw in paths:
        path = Path(raw)
        if not path.is_dir():
            yield path, True
            continue
        for root, dirs, files in os.walk(path):
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for name in sorted(files):
                if not name.startswith("."):
                    yield Path(root) / name, False


def list_files(paths: Iterable[Path | str]) -> tuple[list[Path], list[Skipped]]:
    """The files under `paths` to read, and apart from them the files found in a folder that
    are plainly not DICOM (a README beside the workitems): those are passed over, while a
    file named on its own is always read (and reported when it is no DICOM)."""
    files: list[Path] = []
    passed: list[Skipped] = []
    for path, named in _walk(paths):
        reason = None if named else plainly_not_dicom(path)
        if reason is None:
            files.append(path)
        else:
            passed.append(Skipped(path, reason))
    return files, passed


def plainly_not_dicom(path: Path) -> str | None:
    """Why `path` is plainly not DICOM (empty; neither a DICM preamble nor a raw data set's
    first tag), from its first 132 bytes; None when it may be DICOM or cannot be read."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return None  # the reader reports it
    return _head_problem(head)


def _head_problem(head: bytes) -> str | None:
    """Why a file starting with `head` (its first 132 bytes) is plainly not DICOM, else None."""
    if not head:
        return "empty file"
    if head[128:132] == b"DICM" or _looks_like_raw_dataset(head):
        return None
    return "not a DICOM file (no DICM preamble)"


def _looks_like_raw_dataset(data: bytes) -> bool:
    """A headerless dataset starts with a group 0x0002..0x0008 tag in little endian."""
    if len(data) < 8:
        return False
    group = int.from_bytes(data[0:2], "little")
    element = int.from_bytes(data[2:4], "little")
    return group in (0x0002, 0x0008) and element < 0x2000


def read_dataset(path: Path | str) -> Dataset:
    """Read `path`: a Part 10 file, or a raw dataset starting at group 0002/0008.

    Raises `NotDicomError` (with a short reason) for anything else.
    """
    return read_file(path)[0]


def read_file(path: Path | str) -> tuple[Dataset, bytes]:
    """`read_dataset`, and the file's bytes (read once); see `dataset_bytes`."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
            problem = _head_problem(head)
            data = head + fh.read() if problem is None else head  # a big non-DICOM one: unread
    except FileNotFoundError:
        raise NotDicomError("no such file") from None
    except IsADirectoryError:
        raise NotDicomError("is a directory") from None
    except OSError as exc:
        raise NotDicomError(exc.strerror or str(exc)) from None
    if problem is not None:
        raise NotDicomError(problem)
    part10 = head[128:132] == b"DICM"
    try:
        # Values stay raw until used: a Part 10 file in Explicit VR Little Endian is then
        # sent without decoding and re-encoding every element.
        ds = dcmread(BytesIO(data), force=not part10)
    except (InvalidDicomError, EOFError, ValueError, KeyError, OSError) as exc:
        raise NotDicomError(f"unreadable DICOM: {exc}") from None
    except Exception as exc:  # pydicom raises assorted errors on garbage
        raise NotDicomError(f"unreadable DICOM: {type(exc).__name__}: {exc}") from None
    if part10 and "TransferSyntaxUID" not in getattr(ds, "file_meta", {}):
        raise NotDicomError("unreadable DICOM: no Transfer Syntax UID in the file meta")
    if len(ds) == 0:
        raise NotDicomError("no data elements")
    return ds, data


def dataset_bytes(data: bytes) -> bytes | None:
    """The data set of Part 10 file `data` as it is encoded there (after the file meta).

    None when the file meta has no File Meta Information Group Length to find its end.
    """
    if data[128:132] != b"DICM" or data[132:138] != b"\x02\x00\x00\x00UL":
        return None
    (length,) = struct.unpack("<L", data[140:144])
    end = 144 + length
    if end > len(data) or data[end : end + 2] == b"\x02\x00":  # still group 0002: wrong length
        return None
    return data[end:]


def load_datasets(paths: Iterable[Path | str]) -> tuple[list[Loaded], list[Skipped]]:
    """Read every file under `paths`; return the datasets and the skipped files with reasons."""
    loaded: list[Loaded] = []
    skipped: list[Skipped] = []
    for path in iter_paths(paths):
        try:
            loaded.append(Loaded(path, read_dataset(path)))
        except NotDicomError as exc:
            skipped.append(Skipped(path, str(exc)))
    return loaded, skipped


def to_part10(ds: Dataset) -> bytes:
    """`ds` encoded as a DICOM Part 10 file (Explicit VR Little Endian, with file meta)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", UPS_PUSH)
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(EXPLICIT_VR_LE)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    out = Dataset(ds)  # shallow copy: leave the caller's dataset without file meta
    out.file_meta = meta
    buffer = BytesIO()
    out.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def write_part10(ds: Dataset, path: Path | str) -> Path:
    """Write `ds` to `path` as a Part 10 file, atomically (a temp file, then rename)."""
    path = Path(path)
    write_atomic(path, to_part10(ds))
    return path
