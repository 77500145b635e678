"""DIMSE messages (PS3.7): command sets encoded by hand, and messages over P-DATA-TF.

`Command` is any C- or N- request or response as its fields; `encode()` writes
the group 0000 command set (always Implicit VR Little Endian, with its group
length) and `Command.decode()` reads one back, refusing what the standard does
not allow (a multi-valued or odd-length US, a command set that is not group 0000).
`MessageAssembler` joins the P-DATA-TF fragments of messages (the upper layer,
`tdwii_cli.net.upper`, feeds it).
Data sets stay bytes here: encoding them is `tdwii_cli.dicom.codec`'s job.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from tdwii_cli.net import pdu
from tdwii_cli.net.errors import ABORT_INVALID_PARAMETER, PeerViolation


def _malformed(message: str) -> PeerViolation:
    """A malformed command set or message: the association is aborted (invalid parameter)."""
    return PeerViolation(message, ABORT_INVALID_PARAMETER)


# Command Field values (PS3.7 E.1)
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_MOVE_RQ, C_MOVE_RSP = 0x0021, 0x8021
N_DELETE_RQ, N_DELETE_RSP = 0x0150, 0x8150
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
C_CANCEL_RQ = 0x0FFF
N_EVENT_REPORT_RQ, N_EVENT_REPORT_RSP = 0x0100, 0x8100
N_GET_RQ, N_GET_RSP = 0x0110, 0x8110
N_SET_RQ, N_SET_RSP = 0x0120, 0x8120
N_ACTION_RQ, N_ACTION_RSP = 0x0130, 0x8130
N_CREATE_RQ, N_CREATE_RSP = 0x0140, 0x8140

NAMES = {
    C_STORE_RQ: "C-STORE-RQ",
    C_STORE_RSP: "C-STORE-RSP",
    C_GET_RQ: "C-GET-RQ",
    C_GET_RSP: "C-GET-RSP",
    C_MOVE_RQ: "C-MOVE-RQ",
    C_MOVE_RSP: "C-MOVE-RSP",
    N_DELETE_RQ: "N-DELETE-RQ",
    N_DELETE_RSP: "N-DELETE-RSP",
    C_ECHO_RQ: "C-ECHO-RQ",
    C_ECHO_RSP: "C-ECHO-RSP",
    C_FIND_RQ: "C-FIND-RQ",
    C_FIND_RSP: "C-FIND-RSP",
    C_CANCEL_RQ: "C-CANCEL-RQ",
    N_EVENT_REPORT_RQ: "N-EVENT-REPORT-RQ",
    N_EVENT_REPORT_RSP: "N-EVENT-REPORT-RSP",
    N_GET_RQ: "N-GET-RQ",
    N_GET_RSP: "N-GET-RSP",
    N_SET_RQ: "N-SET-RQ",
    N_SET_RSP: "N-SET-RSP",
    N_ACTION_RQ: "N-ACTION-RQ",
    N_ACTION_RSP: "N-ACTION-RSP",
    N_CREATE_RQ: "N-CREATE-RQ",
    N_CREATE_RSP: "N-CREATE-RSP",
}
# Requests that name their instance by Requested (not Affected) SOP Class/Instance UID
_REQUESTED = {N_GET_RQ, N_SET_RQ, N_ACTION_RQ, N_DELETE_RQ}

# Command set elements (group 0000, PS3.7 E.1)
_GROUP_LENGTH = 0x0000
_AFFECTED_SOP_CLASS = 0x0002
_REQUESTED_SOP_CLASS = 0x0003
_COMMAND_FIELD = 0x0100
_MESSAGE_ID = 0x0110
_RESPONDING_TO = 0x0120
_PRIORITY = 0x0700
_DATA_SET_TYPE = 0x0800
_STATUS = 0x0900
_ERROR_COMMENT = 0x0902
_AFFECTED_SOP_INSTANCE = 0x1000
_REQUESTED_SOP_INSTANCE = 0x1001
_EVENT_TYPE = 0x1002
_ATTRIBUTE_LIST = 0x1005
_ACTION_TYPE = 0x1008
NO_DATASET = 0x0101  # Command Data Set Type: no data set follows
MAX_ERROR_COMMENT = 64


@dataclass(frozen=True)
class Command:
    """One DIMSE command set as its fields.

    `sop_class` / `sop_instance` are the Affected or the Requested SOP Class and
    Instance UIDs, as the command field says. Responses carry `responding_to`
    and `status`; requests `message_id`.
    """

    field: int
    message_id: int | None = None
    responding_to: int | None = None
    sop_class: str = ""
    sop_instance: str = ""
    has_dataset: bool = False
    status: int | None = None
    error_comment: str = ""
    priority: int | None = None
    event_type: int | None = None
    action_type: int | None = None
    attribute_identifiers: tuple[int, ...] = ()

    @property
    def name(self) -> str:
        return NAMES.get(self.field, f"command 0x{self.field:04X}")

    @property
    def is_response(self) -> bool:
        return bool(self.field & 0x8000)

    def response(self, status: int, **fields: object) -> Command:
        """The response to this request with `status` (and other fields of the response)."""
        values: dict[str, object] = {
            "field": self.field | 0x8000,
            "responding_to": self.message_id,
            "sop_class": self.sop_class,
            "sop_instance": self.sop_instance if self.field not in (C_ECHO_RQ, C_FIND_RQ) else "",
            "status": status,
        }
        values.update(fields)
        return Command(**values)  # type: ignore[arg-type]

    def encode(self) -> bytes:
        """The command set, Implicit VR Little Endian, elements in ascending order."""
        requested = self.field in _REQUESTED
        elements: list[tuple[int, bytes]] = []
        if self.sop_class:
            elements.append(
                (_REQUESTED_SOP_CLASS if requested else _AFFECTED_SOP_CLASS, _uid(self.sop_class))
            )
        elements.append((_COMMAND_FIELD, _us(self.field)))
        if self.message_id is not None:
            elements.append((_MESSAGE_ID, _us(self.message_id)))
        if self.responding_to is not None:
            elements.append((_RESPONDING_TO, _us(self.responding_to)))
        if self.priority is not None:
            elements.append((_PRIORITY, _us(self.priority)))
        elements.append((_DATA_SET_TYPE, _us(0x0000 if self.has_dataset else NO_DATASET)))
        if self.status is not None:
            elements.append((_STATUS, _us(self.status)))
        if self.error_comment:
            comment = self.error_comment.encode("ascii", "replace")[:MAX_ERROR_COMMENT]
            elements.append((_ERROR_COMMENT, comment + b" " * (len(comment) % 2)))
        if self.sop_instance:
            tag = _REQUESTED_SOP_INSTANCE if requested else _AFFECTED_SOP_INSTANCE
            elements.append((tag, _uid(self.sop_instance)))
        if self.event_type is not None:
            elements.append((_EVENT_TYPE, _us(self.event_type)))
        if self.attribute_identifiers:
            at = b"".join(
                struct.pack("<HH", t >> 16, t & 0xFFFF) for t in self.attribute_identifiers
            )
            elements.append((_ATTRIBUTE_LIST, at))
        if self.action_type is not None:
            elements.append((_ACTION_TYPE, _us(self.action_type)))
        body = b"".join(struct.pack("<HHL", 0, e, len(v)) + v for e, v in elements)
        return struct.pack("<HHL", 0, _GROUP_LENGTH, 4) + struct.pack("<L", len(body)) + body

    @classmethod
    def decode(cls, data: bytes) -> Command:
        """A command set's fields; `PeerViolation` for anything the standard does not allow."""
        values = _elements(data)
        fld = _read_us(values, _COMMAND_FIELD)
        if fld is None:
            raise _malformed("a command set without a Command Field")
        kind = _read_us(values, _DATA_SET_TYPE)
        if kind is None:
            raise _malformed(f"{NAMES.get(fld, hex(fld))} without a Command Data Set Type")
        sop_class = _read_text(values, _AFFECTED_SOP_CLASS) or _read_text(
            values, _REQUESTED_SOP_CLASS
        )
        sop_instance = _read_text(values, _AFFECTED_SOP_INSTANCE) or _read_text(
            values, _REQUESTED_SOP_INSTANCE
        )
        attrs = values.get(_ATTRIBUTE_LIST, b"")
        if len(attrs) % 4:
            raise _malformed("an Attribute Identifier List whose length is not a multiple of 4")
        tags = tuple(
            (g << 16) | e
            for g, e in (struct.unpack("<HH", attrs[i : i + 4]) for i in range(0, len(attrs), 4))
        )
        return cls(
            field=fld,
            message_id=_read_us(values, _MESSAGE_ID),
            responding_to=_read_us(values, _RESPONDING_TO),
            sop_class=sop_class,
            sop_instance=sop_instance,
            has_dataset=kind != NO_DATASET,
            status=_read_us(values, _STATUS),
            error_comment=_read_text(values, _ERROR_COMMENT),
            priority=_read_us(values, _PRIORITY),
            event_type=_read_us(values, _EVENT_TYPE),
            action_type=_read_us(values, _ACTION_TYPE),
            attribute_identifiers=tags,
        )


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def _uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw  # UI values are padded to even length with NUL


def _elements(data: bytes) -> dict[int, bytes]:
    """Element number -> value bytes of an Implicit VR Little Endian group 0000 command set."""
    out: dict[int, bytes] = {}
    pos = 0
    while pos < len(data):
        if pos + 8 > len(data):
            raise _malformed("a truncated command set element")
        group, elem, length = struct.unpack("<HHL", data[pos : pos + 8])
        if group != 0x0000:
            raise _malformed(f"a command set element ({group:04X},{elem:04X}) outside group 0000")
        if pos + 8 + length > len(data):
            raise _malformed(f"command set element (0000,{elem:04X}) longer than the command set")
        out[elem] = data[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return out


def _read_us(values: dict[int, bytes], elem: int) -> int | None:
    raw = values.get(elem)
    if raw is None:
        return None
    if len(raw) != 2:
        raise _malformed(f"command element (0000,{elem:04X}) is not one US value")
    return int(struct.unpack("<H", raw)[0])


def _read_text(values: dict[int, bytes], elem: int) -> str:
    return values.get(elem, b"").decode("ascii", "replace").strip(" \0")


@dataclass
class Message:
    """One DIMSE message: the presentation context it came on, its command, its data set.

    `too_large`: the data set was longer than the receiver's limit and was discarded
    (`dataset` is None then)."""

    context_id: int
    command: Command
    dataset: bytes | None = field(default=None, repr=False)
    too_large: bool = False


DEFAULT_MAX_MESSAGE = 64 << 20


def encode_message(context_id: int, command: Command, dataset: bytes | None, max_pdu: int) -> bytes:
    """The P-DATA-TF PDUs carrying `command` (and `dataset`), fragmented for `max_pdu`."""
    if (dataset is not None) != command.has_dataset:
        raise ValueError(f"{command.name}: has_dataset does not match the data set given")
    return pdu.p_data(context_id, command.encode(), dataset, max_pdu)


DISCARD_FACTOR = 16
MAX_COMMAND_SET = 1 << 16  # a command set is a few hundred bytes; more is not DICOM


class MessageAssembler:
    """Joins the PDV fragments of P-DATA-TF payloads into messages (`feed` returns each).

    A data set longer than `max_message` is counted, not kept: with `discard` its
    message comes back `too_large` once its last fragment has arrived (up to
    `DISCARD_FACTOR` times the limit is read and dropped; more is a `PeerViolation`),
    without it the excess is a `PeerViolation` at once.
    """

    def __init__(self, max_message: int = DEFAULT_MAX_MESSAGE, *, discard: bool = False) -> None:
        self.max_message = max_message
        self.discard = discard
        self._reset()

    def _reset(self) -> None:
        self._command: Command | None = None
        self._context: int | None = None
        self._parts: list[bytes] = []
        self._size = 0
        self._too_large = False

    @property
    def in_message(self) -> bool:
        """Has part of a message arrived (and not all of it)?"""
        return self._context is not None

    def feed(self, payload: bytes) -> list[Message]:
        """The messages a P-DATA-TF payload completes (usually none or one)."""
        done: list[Message] = []
        for cid, header, fragment in pdu.pdvs(payload):
            if self._context is None:
                self._context = cid
            elif cid != self._context:
                raise _malformed("a message whose fragments use different contexts")
            last = bool(header & pdu.PDV_LAST)
            if header & pdu.PDV_COMMAND:
                if self._command is not None:
                    raise _malformed("a command fragment after a complete command set")
                self._size += len(fragment)
                if self._size > MAX_COMMAND_SET:
                    raise _malformed(f"a command set longer than {MAX_COMMAND_SET} bytes")
                self._parts.append(fragment)
                if last:
                    self._command = Command.decode(b"".join(self._parts))
                    self._parts, self._size = [], 0
                    if not self._command.has_dataset:
                        done.append(Message(cid, self._command))
                        self._reset()
                continue
            if self._command is None:
                raise _malformed("a data set fragment before its command set")
            self._size += len(fragment)
            if self._size > self.max_message:
                if not self.discard:
                    raise _malformed(f"a DIMSE message longer than {self.max_message} bytes")
                if self._size > DISCARD_FACTOR * self.max_message:
                    raise _malformed(f"a data set far over the limit of {self.max_message} bytes")
                self._too_large = True
                self._parts = []
            elif not self._too_large:
                self._parts.append(fragment)
            if last:
                data = None if self._too_large else b"".join(self._parts)
                done.append(Message(cid, self._command, data, too_large=self._too_large))
                self._reset()
        return done
