"""The PDUs of the DICOM upper layer (PS3.8 section 9.3): build them, parse them, read them.

A-ASSOCIATE-RQ/AC/RJ with their presentation context and user information
items, P-DATA-TF, A-RELEASE-RQ/RP and A-ABORT, for both roles: the requestor
builds an RQ and parses the AC/RJ, the acceptor parses the RQ
(`parse_associate_rq`, which refuses anything malformed) and builds the AC/RJ.
`read_pdu` reads one PDU from a socket and refuses a length beyond what the
caller allows before reading its body.
"""

from __future__ import annotations

import functools
import re
import socket
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from tdwii_cli.dicom.uids import (
    APPLICATION_CONTEXT,
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION,
)

A_ASSOCIATE_RQ = 0x01
A_ASSOCIATE_AC = 0x02
A_ASSOCIATE_RJ = 0x03
P_DATA_TF = 0x04
A_RELEASE_RQ = 0x05
A_RELEASE_RP = 0x06
A_ABORT = 0x07

MAX_PDU = 16384  # the longest P-DATA-TF we receive (announced in every A-ASSOCIATE-RQ)
MAX_CONTROL_PDU = 1 << 20  # any other PDU: an A-ASSOCIATE-AC with every context fits easily

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
_ABORT_SOURCE = {0: "the peer (service user)", 1: "reserved", 2: "the peer (service provider)"}


class ProtocolError(Exception):
    """The peer broke the upper layer protocol (or is not a DICOM node)."""


class Rejected(Exception):
    """A-ASSOCIATE-RJ: `result`, `source`, `reason` as in PS3.8 table 9-21."""

    def __init__(self, result: int, source: int, reason: int) -> None:
        self.result, self.source, self.reason = result, source, reason
        words = _RJ_REASON.get((source, reason), f"source {source} reason {reason}")
        super().__init__(f"{_RJ_RESULT.get(result, 'rejected')}: {words}")


class Closed(Exception):
    """The peer closed the connection (no A-ABORT seen)."""


class AbortReceived(Exception):
    """An A-ABORT PDU really received (the peer speaks DICOM to us, over TLS if any)."""

    def __init__(self, payload: bytes = b"") -> None:
        source = payload[2] if len(payload) > 2 else 0
        super().__init__(f"A-ABORT from {_ABORT_SOURCE.get(source, 'the peer')}")


def encode(pdu_type: int, payload: bytes) -> bytes:
    """One PDU: type, reserved byte, 4-byte big-endian length, payload."""
    return struct.pack(">BBL", pdu_type, 0, len(payload)) + payload


def _item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16)


def items(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(item type, body) of the items in an A-ASSOCIATE PDU's variable field."""
    pos = 0
    while pos + 4 <= len(data):
        item_type, _, length = struct.unpack(">BBH", data[pos : pos + 4])
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
        ts = b"".join(_item(0x40, uid.encode()) for uid in cx.transfer_syntaxes)
        head = struct.pack(">BBBB", cx.id, 0, 0, 0) + _item(0x30, cx.abstract_syntax.encode())
        pcs += _item(0x20, head + ts)
    user = _item(
        0x50,
        _item(0x51, struct.pack(">L", max_pdu))
        + _item(0x52, IMPLEMENTATION_CLASS_UID.encode())
        + _item(0x55, IMPLEMENTATION_VERSION.encode()),
    )
    head = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32)
    return encode(A_ASSOCIATE_RQ, head + _item(0x10, APPLICATION_CONTEXT.encode()) + pcs + user)


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
    """The A-ASSOCIATE-AC payload."""
    if len(payload) < 68:
        raise ProtocolError("A-ASSOCIATE-AC too short")
    called = payload[4:20].decode("ascii", "replace").strip()
    calling = payload[20:36].decode("ascii", "replace").strip()
    acc = AssociateAC(called=called, calling=calling)
    for item_type, body in items(payload[68:]):
        if item_type == 0x21 and len(body) >= 4:
            ts = ""
            for sub_type, sub in items(body[4:]):
                if sub_type == 0x40:
                    ts = sub.rstrip(b"\0 ").decode("ascii", "replace")
            acc.contexts.append((body[0], body[2], ts))
        elif item_type == 0x50:
            for sub_type, sub in items(body):
                if sub_type == 0x51 and len(sub) == 4:
                    acc.max_pdu = struct.unpack(">L", sub)[0]
    return acc


def parse_associate_rj(payload: bytes) -> Rejected:
    """The A-ASSOCIATE-RJ payload as a `Rejected` exception (to raise)."""
    if len(payload) < 4:
        raise ProtocolError("A-ASSOCIATE-RJ too short")
    return Rejected(payload[1], payload[2], payload[3])


RELEASE_RQ = encode(A_RELEASE_RQ, bytes(4))
RELEASE_RP = encode(A_RELEASE_RP, bytes(4))
ABORT = encode(A_ABORT, bytes(4))  # service user, no reason

# A-ABORT source 2 (service provider) reasons, PS3.8 table 9-26
ABORT_NOT_SPECIFIED = 0
ABORT_UNRECOGNIZED_PDU = 1
ABORT_UNEXPECTED_PDU = 2
ABORT_UNRECOGNIZED_PARAMETER = 4
ABORT_UNEXPECTED_PARAMETER = 5
ABORT_INVALID_PARAMETER = 6


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
        raise ProtocolError(f"{what} is not a UID")
    return raw.decode("ascii")


def _text(raw: bytes) -> str:
    return raw.rstrip(b"\0 ").decode("latin-1")


def parse_associate_rq(payload: bytes) -> AssociateRQ:
    """The A-ASSOCIATE-RQ payload; `ProtocolError` for anything malformed (an item that
    overruns its PDU, a presentation context without an abstract or transfer syntax, a
    context id that is even or repeated, a UID that is not one)."""
    if len(payload) < 68:
        raise ProtocolError("A-ASSOCIATE-RQ too short")
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


@functools.lru_cache(maxsize=256)
def _variable_items(data: bytes) -> _Items:
    """The items of an A-ASSOCIATE-RQ (remembered: a device proposes the same each time)."""
    rq = AssociateRQ(0, "", "", "")
    seen: set[int] = set()
    for item_type, body in _strict_items(data, "A-ASSOCIATE-RQ"):
        if item_type == 0x10:
            rq.application_context = _text(body)
        elif item_type == 0x20:
            if len(body) < 4:
                raise ProtocolError("a presentation context item too short")
            cid = body[0]
            if cid % 2 == 0 or cid in seen:
                raise ProtocolError(f"presentation context id {cid} is even or repeated")
            seen.add(cid)
            abstract = ""
            syntaxes: list[str] = []
            for sub_type, sub in _strict_items(body[4:], "a presentation context"):
                if sub_type == 0x30:
                    abstract = _uid_text(sub, "an abstract syntax")
                elif sub_type == 0x40:
                    syntaxes.append(_uid_text(sub, "a transfer syntax"))
            if not abstract or not syntaxes:
                raise ProtocolError(f"presentation context {cid} lacks its syntaxes")
            rq.contexts.append(PresentationContext(cid, abstract, tuple(syntaxes)))
        elif item_type == 0x50:
            _user_information(body, rq)
    if not rq.application_context:
        raise ProtocolError("A-ASSOCIATE-RQ without an application context")
    if not rq.contexts:
        raise ProtocolError("A-ASSOCIATE-RQ without a presentation context")
    return (
        rq.application_context,
        tuple(rq.contexts),
        rq.max_pdu,
        rq.implementation_class_uid,
        rq.implementation_version,
        tuple(rq.roles.items()),
    )


def _user_information(body: bytes, rq: AssociateRQ) -> None:
    for sub_type, sub in _strict_items(body, "the user information item"):
        if sub_type == 0x51:
            if len(sub) != 4:
                raise ProtocolError("a maximum length item that is not 4 bytes")
            rq.max_pdu = struct.unpack(">L", sub)[0]
        elif sub_type == 0x52:
            rq.implementation_class_uid = _text(sub)
        elif sub_type == 0x55:
            rq.implementation_version = _text(sub)
        elif sub_type == 0x54:
            if len(sub) < 2:
                raise ProtocolError("a role selection item too short")
            n = struct.unpack(">H", sub[:2])[0]
            if len(sub) != 2 + n + 2:
                raise ProtocolError("a role selection item of the wrong length")
            rq.roles[_uid_text(sub[2 : 2 + n], "a role selection UID")] = (sub[-2], sub[-1])


def _strict_items(data: bytes, where: str) -> Iterator[tuple[int, bytes]]:
    """Like `items`, but an item that overruns its container is a `ProtocolError`."""
    pos = 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise ProtocolError(f"a truncated item in {where}")
        item_type, _, length = struct.unpack(">BBH", data[pos : pos + 4])
        if pos + 4 + length > len(data):
            raise ProtocolError(f"an item of {length} bytes overruns {where}")
        yield item_type, data[pos + 4 : pos + 4 + length]
        pos += 4 + length


def associate_ac(
    rq: AssociateRQ,
    results: Sequence[tuple[int, int, str]],
    max_pdu: int,
    roles: Sequence[tuple[str, int, int]] = (),
) -> bytes:
    """The A-ASSOCIATE-AC answering `rq`: (context id, result, transfer syntax) per
    proposed context, our maximum PDU, our implementation identity, the roles agreed."""
    pcs = b"".join(
        _item(0x21, struct.pack(">BBBB", cid, 0, result, 0) + _item(0x40, ts.encode()))
        for cid, result, ts in results
    )
    user = (
        _item(0x51, struct.pack(">L", max_pdu))
        + _item(0x52, IMPLEMENTATION_CLASS_UID.encode())
        + b"".join(
            _item(0x54, struct.pack(">H", len(uid)) + uid.encode() + bytes((scu, scp)))
            for uid, scu, scp in roles
        )
        + _item(0x55, IMPLEMENTATION_VERSION.encode())
    )
    head = struct.pack(">HH", 1, 0) + rq.raw_called.ljust(16) + rq.raw_calling.ljust(16)
    return encode(
        A_ASSOCIATE_AC,
        head + bytes(32) + _item(0x10, APPLICATION_CONTEXT.encode()) + pcs + _item(0x50, user),
    )


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly `n` bytes, or `Closed` when the peer closes first."""
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 16))
        if not chunk:
            raise Closed("the peer closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_pdu(sock: socket.socket, max_pdata: int = MAX_PDU) -> tuple[int, bytes]:
    """(PDU type, payload) of the next PDU; `ProtocolError` before reading the body of a
    PDU of unknown type or longer than allowed (`max_pdata` for P-DATA-TF)."""
    pdu_type, _, length = struct.unpack(">BBL", recv_exact(sock, 6))
    if not A_ASSOCIATE_RQ <= pdu_type <= A_ABORT:
        raise ProtocolError(f"not a DICOM PDU (type 0x{pdu_type:02X}); is the peer DICOM/TLS?")
    limit = max_pdata if pdu_type == P_DATA_TF and max_pdata else MAX_CONTROL_PDU
    if length > limit:
        raise ProtocolError(f"a PDU of {length} bytes (type 0x{pdu_type:02X}), over {limit}")
    return pdu_type, recv_exact(sock, length)


def p_data(context_id: int, command: bytes, dataset: bytes | None, max_pdu: int) -> bytes:
    """The P-DATA-TF PDUs carrying one message, fragmented for the peer's `max_pdu` (0: none).

    One PDV per PDU; the message control header says command or data set, and last or not.
    """
    limit = (max_pdu - 6) if max_pdu > 6 else 1 << 30  # PDV item: length, context id, header
    out = []
    for payload, kind in ((command, 0x01), (dataset, 0x00)):
        if payload is None:
            continue
        for start in range(0, max(len(payload), 1), limit):
            fragment = payload[start : start + limit]
            last = 0x02 if start + limit >= len(payload) else 0x00
            pdv = struct.pack(">LBB", len(fragment) + 2, context_id, kind | last) + fragment
            out.append(encode(P_DATA_TF, pdv))
    return b"".join(out)


def pdvs(payload: bytes) -> Iterator[tuple[int, int, bytes]]:
    """(context id, message control header, fragment) of each PDV in a P-DATA-TF payload."""
    pos = 0
    while pos < len(payload):
        if pos + 6 > len(payload):
            raise ProtocolError("a truncated PDV item")
        (length,) = struct.unpack(">L", payload[pos : pos + 4])
        if length < 2 or pos + 4 + length > len(payload):
            raise ProtocolError(f"a PDV item of length {length} does not fit its PDU")
        yield payload[pos + 4], payload[pos + 5], payload[pos + 6 : pos + 4 + length]
        pos += 4 + length
