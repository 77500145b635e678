"""The PDUs of the DICOM upper layer (PS3.8 section 9.3): build them, parse them, read them.

A-ASSOCIATE-RQ/AC/RJ with their presentation context and user information
items, P-DATA-TF, A-RELEASE-RQ/RP and A-ABORT. `read_pdu` reads one PDU from a
socket and refuses a length beyond what the caller allows before reading its body.
"""

from __future__ import annotations

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
ABORT = encode(A_ABORT, bytes(4))  # service user, no reason


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
