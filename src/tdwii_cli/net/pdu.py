"""The PDUs of the DICOM upper layer (PS3.8 section 9.3) as bytes: build them and parse them.

A-ASSOCIATE-RQ/AC/RJ with their items (`Item`), P-DATA-TF with its PDVs,
A-RELEASE-RQ/RP and A-ABORT, for both roles: the requestor builds an RQ and
parses the AC/RJ, the acceptor parses the RQ (`parse_associate_rq`, which refuses
anything malformed) and builds the AC/RJ. Nothing here reads or writes a socket:
`tdwii_cli.net.framer` cuts PDUs out of a byte stream, `tdwii_cli.net.upper` runs
the protocol on them. Anything malformed is a `PeerViolation`.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import IntEnum

from tdwii_cli.dicom.uids import (
    APPLICATION_CONTEXT,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
)
from tdwii_cli.net.errors import ABORT_INVALID_PARAMETER, PeerViolation


class PduType(IntEnum):
    """PDU types (PS3.8 table 9-11 and the tables that follow)."""

    A_ASSOCIATE_RQ = 0x01
    A_ASSOCIATE_AC = 0x02
    A_ASSOCIATE_RJ = 0x03
    P_DATA_TF = 0x04
    A_RELEASE_RQ = 0x05
    A_RELEASE_RP = 0x06
    A_ABORT = 0x07


A_ASSOCIATE_RQ = PduType.A_ASSOCIATE_RQ
A_ASSOCIATE_AC = PduType.A_ASSOCIATE_AC
A_ASSOCIATE_RJ = PduType.A_ASSOCIATE_RJ
P_DATA_TF = PduType.P_DATA_TF
A_RELEASE_RQ = PduType.A_RELEASE_RQ
A_RELEASE_RP = PduType.A_RELEASE_RP
A_ABORT = PduType.A_ABORT


class Item(IntEnum):
    """Item and sub-item types of the A-ASSOCIATE PDUs (PS3.8 9.3.2-9.3.3, PS3.7 D.3.3)."""

    APPLICATION_CONTEXT = 0x10
    PRESENTATION_CONTEXT_RQ = 0x20
    PRESENTATION_CONTEXT_AC = 0x21
    ABSTRACT_SYNTAX = 0x30
    TRANSFER_SYNTAX = 0x40
    USER_INFORMATION = 0x50
    MAXIMUM_LENGTH = 0x51
    IMPLEMENTATION_CLASS_UID = 0x52
    ASYNCHRONOUS_OPERATIONS_WINDOW = 0x53
    ROLE_SELECTION = 0x54
    IMPLEMENTATION_VERSION = 0x55
    SOP_CLASS_EXTENDED_NEGOTIATION = 0x56
    SOP_CLASS_COMMON_EXTENDED_NEGOTIATION = 0x57
    USER_IDENTITY_RQ = 0x58
    USER_IDENTITY_AC = 0x59


HEADER = 6  # type, reserved, 4-byte length
MAX_PDU = 16384  # the longest P-DATA-TF we receive (announced in every A-ASSOCIATE-RQ)
MAX_ASSOCIATE = 1 << 17  # an A-ASSOCIATE-RQ or AC: 128 contexts with many syntaxes fit easily
MAX_FIXED = 256  # RJ, RELEASE-RQ/RP, ABORT: 4 bytes in the standard; a little slack, no more

_RJ_RESULT = {1: "rejected (permanent)", 2: "rejected (transient)"}
_RJ_REASON = {
    (1, 1): "no reason given",
    (1, 2): "application context name not supported",
    (1, 3): "calling AE title not recognised",
    (1, 7): "called AE title not recognised",
    (2, 1): "no reason given",
    (2, 2): "protocol version not supported",
    (3, 1): "temporary congestion",
    (3, 2): "local limit exceeded",
}


@dataclass(frozen=True)
class AssociateRJ:
    """What an A-ASSOCIATE-RJ said: `result`, `source`, `reason` (PS3.8 table 9-21)."""

    result: int
    source: int
    reason: int

    def __str__(self) -> str:
        words = _RJ_REASON.get(
            (self.source, self.reason), f"source {self.source} reason {self.reason}"
        )
        return f"{_RJ_RESULT.get(self.result, 'rejected')}: {words}"


def encode(pdu_type: int, payload: bytes) -> bytes:
    """One PDU: type, reserved byte, 4-byte big-endian length, payload."""
    return struct.pack(">BBL", pdu_type, 0, len(payload)) + payload


def _item(item_type: Item, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16)


def items(data: bytes, where: str) -> Iterator[tuple[int, bytes]]:
    """(item type, body) of the items in `data` (an A-ASSOCIATE PDU's variable field or an
    item's); an item that overruns its container is a `PeerViolation`."""
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise PeerViolation(f"a truncated item in {where}", ABORT_INVALID_PARAMETER)
        item_type, _, length = struct.unpack_from(">BBH", data, pos)
        if pos + 4 + length > len(data):
            raise PeerViolation(
                f"an item of {length} bytes overruns {where}", ABORT_INVALID_PARAMETER
            )
        yield item_type, data[pos + 4 : pos + 4 + length]
        pos += 4 + length


@dataclass(frozen=True)
class PresentationContext:
    """One proposed presentation context: its odd id, the abstract syntax, the transfer syntaxes."""

    id: int
    abstract_syntax: str
    transfer_syntaxes: tuple[str, ...]


def associate_rq(
    calling: str, called: str, contexts: Sequence[PresentationContext], max_pdu: int = MAX_PDU
) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing `contexts`, with our implementation identity."""
    pcs = b""
    for cx in contexts:
        ts = b"".join(_item(Item.TRANSFER_SYNTAX, uid.encode()) for uid in cx.transfer_syntaxes)
        head = struct.pack(">BBBB", cx.id, 0, 0, 0)
        head += _item(Item.ABSTRACT_SYNTAX, cx.abstract_syntax.encode())
        pcs += _item(Item.PRESENTATION_CONTEXT_RQ, head + ts)
    user = _item(
        Item.USER_INFORMATION,
        _item(Item.MAXIMUM_LENGTH, struct.pack(">L", max_pdu))
        + _item(Item.IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_CLASS_UID.encode())
        + _item(Item.IMPLEMENTATION_VERSION, IMPLEMENTATION_VERSION.encode()),
    )
    head = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32)
    context = _item(Item.APPLICATION_CONTEXT, APPLICATION_CONTEXT.encode())
    return encode(A_ASSOCIATE_RQ, head + context + pcs + user)


@dataclass
class AssociateAC:
    """What an A-ASSOCIATE-AC said: titles, the peer's maximum PDU, each context's result."""

    called: str
    calling: str
    max_pdu: int = 0
    contexts: list[tuple[int, int, str]] = field(default_factory=list)  # id, result, TS


# A-ASSOCIATE-AC presentation context results (PS3.8 table 9-18)
CONTEXT_RESULTS = {
    0: "acceptance",
    1: "user rejection",
    2: "no reason",
    3: "abstract syntax not supported",
    4: "transfer syntaxes not supported",
}


def parse_associate_ac(payload: bytes) -> AssociateAC:
    """The A-ASSOCIATE-AC payload; `PeerViolation` when it is malformed."""
    if len(payload) < 68:
        raise PeerViolation("A-ASSOCIATE-AC too short", ABORT_INVALID_PARAMETER)
    called = payload[4:20].decode("ascii", "replace").strip()
    calling = payload[20:36].decode("ascii", "replace").strip()
    acc = AssociateAC(called=called, calling=calling)
    for item_type, body in items(payload[68:], "the A-ASSOCIATE-AC"):
        if item_type == Item.PRESENTATION_CONTEXT_AC:
            if len(body) < 4:
                raise PeerViolation(
                    "a presentation context item too short", ABORT_INVALID_PARAMETER
                )
            ts = ""
            for sub_type, sub in items(body[4:], "a presentation context"):
                if sub_type == Item.TRANSFER_SYNTAX:
                    ts = sub.rstrip(b"\0 ").decode("ascii", "replace")
            acc.contexts.append((body[0], body[2], ts))
        elif item_type == Item.USER_INFORMATION:
            for sub_type, sub in items(body, "the user information item"):
                if sub_type == Item.MAXIMUM_LENGTH and len(sub) == 4:
                    acc.max_pdu = struct.unpack(">L", sub)[0]
    return acc


def parse_associate_rj(payload: bytes) -> AssociateRJ:
    """The A-ASSOCIATE-RJ payload."""
    if len(payload) < 4:
        raise PeerViolation("A-ASSOCIATE-RJ too short", ABORT_INVALID_PARAMETER)
    return AssociateRJ(payload[1], payload[2], payload[3])


RELEASE_RQ = encode(A_RELEASE_RQ, bytes(4))
RELEASE_RP = encode(A_RELEASE_RP, bytes(4))
ABORT = encode(A_ABORT, bytes(4))  # service user, no reason


def abort(source: int = 0, reason: int = 0) -> bytes:
    """An A-ABORT PDU: source 0 service user, 2 service provider (with a reason)."""
    return encode(A_ABORT, bytes((0, 0, source, reason if source == 2 else 0)))


def associate_rj(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 table 9-21)."""
    return encode(A_ASSOCIATE_RJ, bytes((0, result, source, reason)))


# -- the acceptor's side ---------------------------------------------------------------


@dataclass
class AssociateRQ:
    """What an A-ASSOCIATE-RQ proposed (every text as received, unpadded)."""

    protocol_version: int
    called: str
    calling: str
    application_context: str
    contexts: list[PresentationContext] = field(default_factory=list)
    max_pdu: int = 0  # the longest P-DATA-TF the requestor takes (0: no limit)
    implementation_class_uid: str = ""
    implementation_version: str = ""
    roles: dict[str, tuple[int, int]] = field(default_factory=dict)  # abstract -> (SCU, SCP)
    raw_called: bytes = b""
    raw_calling: bytes = b""


_UID = re.compile(rb"[0-9.]{1,64}")


def _uid_text(raw: bytes, what: str) -> str:
    raw = raw.rstrip(b"\0 ")
    if not _UID.fullmatch(raw):
        raise PeerViolation(f"{what} is not a UID", ABORT_INVALID_PARAMETER)
    return raw.decode("ascii")


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0 ").decode("latin-1")


def parse_associate_rq(payload: bytes) -> AssociateRQ:
    """The A-ASSOCIATE-RQ payload; `PeerViolation` for anything malformed (an item that
    overruns its PDU, a presentation context without an abstract or transfer syntax, a
    context id that is even or repeated, a UID that is not one)."""
    if len(payload) < 68:
        raise PeerViolation("A-ASSOCIATE-RQ too short", ABORT_INVALID_PARAMETER)
    version = struct.unpack(">H", payload[0:2])[0]
    context, contexts, max_pdu, uid, name, roles = _variable_items(payload[68:])
    return AssociateRQ(
        protocol_version=version,
        called=payload[4:20].decode("latin-1").strip(" "),
        calling=payload[20:36].decode("latin-1").strip(" "),
        application_context=context,
        contexts=list(contexts),
        max_pdu=max_pdu,
        implementation_class_uid=uid,
        implementation_version=name,
        roles=dict(roles),
        raw_called=payload[4:20],
        raw_calling=payload[20:36],
    )


_Items = tuple[
    str, tuple[PresentationContext, ...], int, str, str, tuple[tuple[str, tuple[int, int]], ...]
]
_ITEMS_SEEN: dict[bytes, _Items] = {}  # a device proposes the same each time: parse it once
_ITEMS_SEEN_KEY = 4096  # longer proposals are parsed each time (the cache stays small)
_ITEMS_SEEN_MAX = 256


def _variable_items(data: bytes) -> _Items:
    """The items of an A-ASSOCIATE-RQ, remembered for short proposals."""
    found = _ITEMS_SEEN.get(data)
    if found is None:
        found = _parse_variable_items(data)
        if len(data) <= _ITEMS_SEEN_KEY:
            if len(_ITEMS_SEEN) >= _ITEMS_SEEN_MAX:
                _ITEMS_SEEN.clear()
            _ITEMS_SEEN[data] = found
    return found


def _parse_variable_items(data: bytes) -> _Items:
    rq = AssociateRQ(0, "", "", "")
    seen: set[int] = set()
    for item_type, body in items(data, "A-ASSOCIATE-RQ"):
        if item_type == Item.APPLICATION_CONTEXT:
            rq.application_context = _text(body)
        elif item_type == Item.PRESENTATION_CONTEXT_RQ:
            if len(body) < 4:
                raise PeerViolation(
                    "a presentation context item too short", ABORT_INVALID_PARAMETER
                )
            cid = body[0]
            if cid % 2 == 0 or cid in seen:
                raise PeerViolation(
                    f"presentation context id {cid} is even or repeated", ABORT_INVALID_PARAMETER
                )
            seen.add(cid)
            abstract = ""
            syntaxes: list[str] = []
            for sub_type, sub in items(body[4:], "a presentation context"):
                if sub_type == Item.ABSTRACT_SYNTAX:
                    abstract = _uid_text(sub, "an abstract syntax")
                elif sub_type == Item.TRANSFER_SYNTAX:
                    syntaxes.append(_uid_text(sub, "a transfer syntax"))
            if not abstract or not syntaxes:
                raise PeerViolation(
                    f"presentation context {cid} lacks its syntaxes", ABORT_INVALID_PARAMETER
                )
            rq.contexts.append(PresentationContext(cid, abstract, tuple(syntaxes)))
        elif item_type == Item.USER_INFORMATION:
            _user_information(body, rq)
    if not rq.application_context:
        raise PeerViolation(
            "A-ASSOCIATE-RQ without an application context", ABORT_INVALID_PARAMETER
        )
    if not rq.contexts:
        raise PeerViolation(
            "A-ASSOCIATE-RQ without a presentation context", ABORT_INVALID_PARAMETER
        )
    return (
        rq.application_context,
        tuple(rq.contexts),
        rq.max_pdu,
        rq.implementation_class_uid,
        rq.implementation_version,
        tuple(rq.roles.items()),
    )


def _user_information(body: bytes, rq: AssociateRQ) -> None:
    for sub_type, sub in items(body, "the user information item"):
        if sub_type == Item.MAXIMUM_LENGTH:
            if len(sub) != 4:
                raise PeerViolation(
                    "a maximum length item that is not 4 bytes", ABORT_INVALID_PARAMETER
                )
            rq.max_pdu = struct.unpack(">L", sub)[0]
        elif sub_type == Item.IMPLEMENTATION_CLASS_UID:
            rq.implementation_class_uid = _text(sub)
        elif sub_type == Item.IMPLEMENTATION_VERSION:
            rq.implementation_version = _text(sub)
        elif sub_type == Item.ROLE_SELECTION:
            if len(sub) < 2:
                raise PeerViolation("a role selection item too short", ABORT_INVALID_PARAMETER)
            n = struct.unpack(">H", sub[:2])[0]
            if len(sub) != 2 + n + 2:
                raise PeerViolation(
                    "a role selection item of the wrong length", ABORT_INVALID_PARAMETER
                )
            rq.roles[_uid_text(sub[2 : 2 + n], "a role selection UID")] = (sub[-2], sub[-1])


def associate_ac(
    rq: AssociateRQ,
    results: Sequence[tuple[int, int, str]],
    max_pdu: int,
    roles: Sequence[tuple[str, int, int]] = (),
) -> bytes:
    """The A-ASSOCIATE-AC answering `rq`: (context id, result, transfer syntax) per
    proposed context, our maximum PDU, our implementation identity, the roles agreed."""
    pcs = b"".join(
        _item(
            Item.PRESENTATION_CONTEXT_AC,
            struct.pack(">BBBB", cid, 0, result, 0) + _item(Item.TRANSFER_SYNTAX, ts.encode()),
        )
        for cid, result, ts in results
    )
    user = (
        _item(Item.MAXIMUM_LENGTH, struct.pack(">L", max_pdu))
        + _item(Item.IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_CLASS_UID.encode())
        + b"".join(
            _item(
                Item.ROLE_SELECTION,
                struct.pack(">H", len(uid)) + uid.encode() + bytes((scu, scp)),
            )
            for uid, scu, scp in roles
        )
        + _item(Item.IMPLEMENTATION_VERSION, IMPLEMENTATION_VERSION.encode())
    )
    head = struct.pack(">HH", 1, 0) + rq.raw_called.ljust(16) + rq.raw_calling.ljust(16)
    context = _item(Item.APPLICATION_CONTEXT, APPLICATION_CONTEXT.encode())
    return encode(
        A_ASSOCIATE_AC, head + bytes(32) + context + pcs + _item(Item.USER_INFORMATION, user)
    )


# -- P-DATA-TF ---------------------------------------------------------------------------

PDV_COMMAND = 0x01  # message control header: a command fragment (else a data set one)
PDV_LAST = 0x02  # ... the last fragment of the command or data set


def p_data(context_id: int, command: bytes, dataset: bytes | None, max_pdu: int) -> bytes:
    """The P-DATA-TF PDUs carrying one message, fragmented for the peer's `max_pdu` (0: none).

    One PDV per PDU; the message control header says command or data set, and last or not.
    """
    limit = (max_pdu - 6) if max_pdu > 6 else 1 << 30  # PDV item: length, context id, header
    out = []
    for payload, kind in ((command, PDV_COMMAND), (dataset, 0x00)):
        if payload is None:
            continue
        for start in range(0, max(len(payload), 1), limit):
            fragment = payload[start : start + limit]
            last = PDV_LAST if start + limit >= len(payload) else 0x00
            pdv = struct.pack(">LBB", len(fragment) + 2, context_id, kind | last) + fragment
            out.append(encode(P_DATA_TF, pdv))
    return b"".join(out)


def pdvs(payload: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(context id, message control header, fragment) of each PDV in a P-DATA-TF payload."""
    pos = 0
    end = len(payload)
    if not end:
        raise PeerViolation("a P-DATA-TF without a PDV", ABORT_INVALID_PARAMETER)
    while pos < end:
        if pos + 6 > end:
            raise PeerViolation("a truncated PDV item", ABORT_INVALID_PARAMETER)
        (length,) = struct.unpack_from(">L", payload, pos)
        if length < 2 or pos + 4 + length > end:
            raise PeerViolation(
                f"a PDV item of length {length} does not fit its PDU", ABORT_INVALID_PARAMETER
            )
        yield payload[pos + 4], payload[pos + 5], payload[pos + 6 : pos + 4 + length]
        pos += 4 + length
