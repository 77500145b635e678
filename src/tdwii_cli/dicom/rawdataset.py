"""Explicit VR Little Endian data sets as bytes: find elements, copy them, build a subset
without decoding a value.

`scan(data)` lists the top-level elements of an encoded data set (tag, VR, the
span of the whole element and of its value), walking sequences of undefined
length; `Selection` is a prepared list of keys (with sub-keys for sequences)
that `Selection.pick(data)` copies out of an encoded data set as a new encoded
data set: present keys byte for byte, absent ones as empty elements. A C-FIND
response is exactly that, and costs no pydicom this way.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LONG_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
KNOWN_VRS = LONG_VRS | frozenset(
    {
        b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FD", b"FL", b"IS", b"LO", b"LT",
        b"PN", b"SH", b"SL", b"SS", b"ST", b"TM", b"UI", b"UL", b"US",
    }
)  # fmt: skip
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD


class RawError(ValueError):
    """The bytes are not an Explicit VR Little Endian data set we can walk."""


@dataclass(frozen=True, order=True)
class RawElement:
    tag: int
    vr: bytes
    start: int  # the element's first byte
    value: int  # its value's first byte
    end: int  # one past its last byte (its value's too)
    undefined: bool = False  # a sequence of undefined length (end is past its delimiter)


def _tag(data: bytes, pos: int) -> int:
    group, elem = struct.unpack_from("<HH", data, pos)
    return int(group) << 16 | int(elem)


def _skip_items(data: bytes, pos: int, limit: int) -> int:
    """Past the items of a sequence of undefined length starting at `pos`, and its end."""
    while pos + 8 <= limit:
        tag = _tag(data, pos)
        (length,) = struct.unpack_from("<L", data, pos + 4)
        pos += 8
        if tag == SEQUENCE_END:
            return pos
        if tag != ITEM:
            raise RawError(f"({tag >> 16:04X},{tag & 0xFFFF:04X}) where an item belongs")
        if length != UNDEFINED:
            pos += length
            continue
        while True:  # an item of undefined length: its elements, then its end
            if pos + 8 > limit:
                raise RawError("an item without its end")
            if _tag(data, pos) == ITEM_END:
                pos += 8
                break
            pos = _element(data, pos, limit).end
    raise RawError("a sequence without its end")


def _element(data: bytes, pos: int, limit: int) -> RawElement:
    if pos + 8 > limit:
        raise RawError("a truncated element header")
    tag = _tag(data, pos)
    vr = data[pos + 4 : pos + 6]
    if vr in LONG_VRS:
        if pos + 12 > limit:
            raise RawError("a truncated element header")
        (length,) = struct.unpack_from("<L", data, pos + 8)
        value = pos + 12
    elif vr in KNOWN_VRS:
        (length,) = struct.unpack_from("<H", data, pos + 6)
        value = pos + 8
    else:
        raise RawError(f"an unknown VR {vr!r}")
    if length == UNDEFINED:
        if vr not in (b"SQ", b"UN"):
            raise RawError("an undefined length outside a sequence")
        return RawElement(tag, vr, pos, value, _skip_items(data, value, limit), undefined=True)
    end = value + length
    if end > limit:
        raise RawError("an element longer than its data set")
    return RawElement(tag, vr, pos, value, end)


def scan(data: bytes, start: int = 0, end: int | None = None) -> dict[int, RawElement]:
    """Tag -> element, for the elements between `start` and `end` (one level)."""
    limit = len(data) if end is None else end
    out: dict[int, RawElement] = {}
    pos = start
    while pos < limit:
        elem = _element(data, pos, limit)
        out[elem.tag] = elem
        pos = elem.end
    return out


def items(data: bytes, seq: RawElement) -> Iterable[tuple[int, int]]:
    """(first byte, end) of each item's content in sequence element `seq`."""
    return value_items(data, seq.value, seq.end)


def value_items(data: bytes, pos: int, limit: int) -> Iterable[tuple[int, int]]:
    """(first byte, end) of each item's content in the sequence value `data[pos:limit]`."""
    while pos + 8 <= limit:
        tag = _tag(data, pos)
        (length,) = struct.unpack_from("<L", data, pos + 4)
        if tag == SEQUENCE_END:
            return
        if tag != ITEM:
            raise RawError("not an item in a sequence")
        pos += 8
        if length != UNDEFINED:
            yield pos, pos + length
            pos += length
            continue
        begin = pos
        while True:
            if pos + 8 > limit:
                raise RawError("an item without its end")
            if _tag(data, pos) == ITEM_END:
                break
            pos = _element(data, pos, limit).end
        yield begin, pos
        pos += 8


def subset(data: bytes, wanted: Iterable[int]) -> bytes:
    """The elements of `data` with the `wanted` tags (those present), as a data set."""
    found = scan(data)
    picked = sorted(found[tag] for tag in set(wanted) if tag in found)
    return b"".join(data[elem.start : elem.end] for elem in picked)


def header(tag: int, vr: bytes, length: int) -> bytes:
    """The Explicit VR Little Endian header of an element of `length` value bytes."""
    group, elem = tag >> 16, tag & 0xFFFF
    if vr in LONG_VRS:
        return struct.pack("<HH2sHL", group, elem, vr, 0, length)
    return struct.pack("<HH2sH", group, elem, vr, length)


@dataclass(frozen=True)
class Key:
    """A key to pick: its tag, its VR (for an empty answer), and for a sequence the keys
    to pick from each item (None: the whole sequence)."""

    tag: int
    vr: bytes
    sub: Selection | None = None


class Selection:
    """Keys to copy out of encoded data sets (see the module docstring)."""

    def __init__(self, keys: Sequence[Key], always: Sequence[int] = ()) -> None:
        self.keys = sorted(keys, key=lambda k: k.tag)
        self.always = tuple(t for t in always if t not in {k.tag for k in keys})

    def pick(self, data: bytes, start: int = 0, end: int | None = None) -> bytes:
        """The selected keys of the data set in `data[start:end]`, as an encoded data set."""
        found = scan(data, start, end)
        parts: list[tuple[int, bytes]] = []
        for key in self.keys:
            elem = found.get(key.tag)
            if elem is None:
                parts.append((key.tag, header(key.tag, key.vr, 0)))
            elif key.sub is not None and elem.vr == b"SQ":
                body = b"".join(
                    struct.pack("<HHL", 0xFFFE, 0xE000, len(item)) + item
                    for item in (key.sub.pick(data, a, b) for a, b in items(data, elem))
                )
                parts.append((key.tag, header(key.tag, b"SQ", len(body)) + body))
            else:  # byte for byte (an undefined length keeps its delimiter)
                parts.append((key.tag, data[elem.start : elem.end]))
        for tag in self.always:
            elem = found.get(tag)
            if elem is not None:
                parts.append((tag, data[elem.start : elem.end]))
        parts.sort(key=lambda part: part[0])
        return b"".join(part for _, part in parts)


# -- building and reading values (Explicit VR Little Endian, no pydicom) -------------------

_TEXT_PAD = {b"UI": b"\0"}  # every other string VR is padded with a space
NUMERIC_FORMATS = {
    b"US": "<H", b"SS": "<h", b"UL": "<L", b"SL": "<l", b"FL": "<f", b"FD": "<d",
    b"UV": "<Q", b"SV": "<q",
}  # fmt: skip


def element(tag: int, vr: bytes, value: bytes) -> bytes:
    """One element: header and `value` (padded to an even length as its VR wants)."""
    if len(value) % 2:
        binary = vr in LONG_VRS and vr not in (b"UC", b"UR", b"UT")
        value += b"\0" if binary else _TEXT_PAD.get(vr, b" ")
    return header(tag, vr, len(value)) + value


def text_element(tag: int, vr: bytes, text: str) -> bytes:
    """A string element (`text` as UTF-8, ISO_IR 192; empty for a return key)."""
    return element(tag, vr, text.encode("utf-8"))


def sequence_element(tag: int, items_: Sequence[bytes]) -> bytes:
    """A sequence of defined length holding the encoded `items_`."""
    body = b"".join(struct.pack("<HHL", 0xFFFE, 0xE000, len(item)) + item for item in items_)
    return header(tag, b"SQ", len(body)) + body


def elements(data: bytes, start: int = 0, end: int | None = None) -> list[bytes]:
    """The top-level elements of `data[start:end]`, each whole as encoded."""
    return [data[e.start : e.end] for e in scan(data, start, end).values()]


def ordered(encoded: Iterable[bytes]) -> bytes:
    """Whole encoded elements joined as a data set, in ascending tag order."""
    in_order: list[bytes] = sorted(encoded, key=_first_tag)
    return b"".join(in_order)


def _first_tag(element: bytes) -> int:
    return _tag(element, 0)


def text_of(data: bytes, elem: RawElement | None) -> str:
    """A string element's value without its padding ('' when absent)."""
    if elem is None:
        return ""
    raw = data[elem.value : elem.end]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("latin-1")
    return text.strip(" \0")


def first_item(data: bytes, elem: RawElement | None) -> dict[int, RawElement]:
    """The elements of a sequence's first item ({} when absent or empty)."""
    if elem is None or elem.vr != b"SQ":
        return {}
    for start, end in items(data, elem):
        return scan(data, start, end)
    return {}
