"""Data sets to bytes and back in the transfer syntaxes tdwii negotiates (pydicom underneath).

Little and big endian, implicit and explicit VR, and deflated explicit VR little
endian (PS3.5 A.5). Decoding is lazy: values stay raw until they are used.

pydicom's own value validation on reading is off: it only warns (on stderr, in
its words), costs a quarter of a workitem's checks, and tdwii checks the values
it relies on itself (`tdwii_cli.ups.ncreate`), answering with a status.
"""

from __future__ import annotations

import zlib
from io import BytesIO

from pydicom import config
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset

from tdwii_cli.dicom.uids import (
    DEFLATED_EXPLICIT_VR_LE,
    EXPLICIT_VR_BE,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
)

config.settings.reading_validation_mode = config.IGNORE

SUPPORTED = (EXPLICIT_VR_LE, IMPLICIT_VR_LE, DEFLATED_EXPLICIT_VR_LE, EXPLICIT_VR_BE)


class CodecError(ValueError):
    """The bytes are not a data set in that transfer syntax (or it is not one we speak)."""


def _encoding(transfer_syntax: str) -> tuple[bool, bool, bool]:
    """(implicit VR, little endian, deflated) of a supported transfer syntax."""
    if transfer_syntax not in SUPPORTED:
        raise CodecError(f"transfer syntax {transfer_syntax} is not supported")
    return (
        transfer_syntax == IMPLICIT_VR_LE,
        transfer_syntax != EXPLICIT_VR_BE,
        transfer_syntax == DEFLATED_EXPLICIT_VR_LE,
    )


def encode(ds: Dataset, transfer_syntax: str = EXPLICIT_VR_LE) -> bytes:
    """`ds` encoded in `transfer_syntax` (an even number of bytes)."""
    implicit, little, deflated = _encoding(transfer_syntax)
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    write_dataset(fp, ds)
    data = fp.getvalue()
    if deflated:
        packer = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        data = packer.compress(data) + packer.flush()
        data += b"\x00" if len(data) % 2 else b""
    return data


def decode(data: bytes, transfer_syntax: str = EXPLICIT_VR_LE) -> Dataset:
    """The data set `data` encodes in `transfer_syntax` (values decoded when first used)."""
    implicit, little, deflated = _encoding(transfer_syntax)
    if deflated:
        try:
            data = zlib.decompress(data, -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise CodecError(f"deflated data set cannot be inflated: {exc}") from None
    try:
        return read_dataset(BytesIO(data), implicit, little)
    except Exception as exc:  # pydicom raises assorted errors on garbage
        raise CodecError(f"not a data set: {type(exc).__name__}: {exc}") from None


def transcode(data: bytes, source: str, target: str = EXPLICIT_VR_LE) -> bytes:
    """The data set `data` (in `source`) encoded in `target`; `data` itself when they are the
    same transfer syntax."""
    if source == target:
        return data
    return encode(decode(data, source), target)
