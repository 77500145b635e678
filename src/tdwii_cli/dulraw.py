"""A minimal DICOM upper layer client, directly on sockets: the PDUs and DIMSE commands.

`tdwii echo` and `tdwii create-workitem` use it (through `rawassoc`) instead of
pynetdicom: no pydicom/pynetdicom import for echo, no polling threads, one
request in the peer's time plus microseconds. It speaks A-ASSOCIATE-RQ/AC/RJ
for one presentation context, P-DATA-TF (fragmented to the peer's maximum PDU
length), A-RELEASE-RQ/RP and A-ABORT (PS3.8 section 9.3), with the C-ECHO and
N-CREATE commands (PS3.7); the benchmark's load generator uses it too.
"""

from __future__ import annotations

import socket
import ssl
import struct
from dataclasses import dataclass, field

APPLICATION_CONTEXT = b"1.2.840.10008.3.1.1.1"
VERIFICATION = "1.2.840.10008.1.1"
TRANSFER_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1")
# tdwii's Implementation Class UID (a UUID-derived 2.25 UID, PS3.5 B.2)
IMPLEMENTATION_CLASS_UID = b"2.25.139514309086075461509278531098557105521"
IMPLEMENTATION_VERSION = b"TDWII_010"
MAX_PDU = 16384

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


class Aborted(Exception):
    """A-ABORT from the peer, or the connection closed mid-association."""


class AbortPdu(Aborted):
    """An A-ABORT PDU really received (the peer speaks DICOM to us, over TLS if any)."""


def _item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def _pdu(pdu_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(payload)) + payload


def _ae(title: str) -> bytes:
    return title.encode("ascii", "replace")[:16].ljust(16)


def associate_rq(
    calling: str,
    called: str,
    abstract: str = VERIFICATION,
    transfer_syntaxes: tuple[str, ...] = TRANSFER_SYNTAXES,
    separate: bool = False,
) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing `abstract` with `transfer_syntaxes`.

    One presentation context (id 1) offering them all, or with `separate` one
    context per transfer syntax (ids 1, 3, 5, ...): the acceptor then accepts
    each it supports and the requestor picks, instead of the acceptor.
    """
    groups = [(s,) for s in transfer_syntaxes] if separate else [transfer_syntaxes]
    pc = b""
    for n, group in enumerate(groups):
        ts = b"".join(_item(0x40, uid.encode()) for uid in group)
        head = struct.pack(">BBBB", 2 * n + 1, 0, 0, 0) + _item(0x30, abstract.encode())
        pc += _item(0x20, head + ts)
    user = _item(
        0x50,
        _item(0x51, struct.pack(">L", MAX_PDU))
        + _item(0x52, IMPLEMENTATION_CLASS_UID)
        + _item(0x55, IMPLEMENTATION_VERSION),
    )
    head = struct.pack(">HH", 1, 0) + _ae(called) + _ae(calling) + bytes(32)
    return _pdu(0x01, head + _item(0x10, APPLICATION_CONTEXT) + pc + user)


def _element(group: int, elem: int, value: bytes) -> bytes:
    return struct.pack("<HHL", group, elem, len(value)) + value


def _uid(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw  # UI values are padded to even length with NUL


def command_set(elements: list[tuple[int, bytes]]) -> bytes:
    """A group 0000 command set (Implicit VR Little Endian) with its group length.

    `elements` are (element number, encoded value) in ascending order.
    """
    body = b"".join(_element(0x0000, elem, value) for elem, value in elements)
    return _element(0x0000, 0x0000, struct.pack("<L", len(body))) + body


NO_DATASET = 0x0101  # Command Data Set Type: no data set follows
C_ECHO_RSP = 0x8030
N_CREATE_RQ = 0x0140
N_CREATE_RSP = 0x8140


def echo_rq(message_id: int, context_id: int = 1) -> bytes:
    """A P-DATA-TF PDU with one C-ECHO-RQ command (Implicit VR Little Endian)."""
    command = command_set(
        [
            (0x0002, _uid(VERIFICATION)),
            (0x0100, struct.pack("<H", 0x0030)),
            (0x0110, struct.pack("<H", message_id)),
            (0x0800, struct.pack("<H", NO_DATASET)),
        ]
    )
    return _pdu(0x04, struct.pack(">LBB", len(command) + 2, context_id, 0x03) + command)


def n_create_rq(message_id: int, sop_class: str, sop_instance: str | None) -> bytes:
    """The command set of an N-CREATE-RQ with a data set (PS3.7 10.3.5)."""
    elements = [
        (0x0002, _uid(sop_class)),
        (0x0100, struct.pack("<H", N_CREATE_RQ)),
        (0x0110, struct.pack("<H", message_id)),
        (0x0800, struct.pack("<H", 0x0000)),
    ]
    if sop_instance:
        elements.append((0x1000, _uid(sop_instance)))
    return command_set(elements)


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
            out.append(_pdu(0x04, pdv))
    return b"".join(out)


RELEASE_RQ = _pdu(0x05, bytes(4))
RELEASE_RP = _pdu(0x06, bytes(4))
ABORT = _pdu(0x07, bytes(4))


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise Aborted("the peer closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    """(PDU type, payload) of the next PDU."""
    pdu_type, _, length = struct.unpack(">BBL", _recv_exact(sock, 6))
    if pdu_type not in range(1, 8) or length > 64 * 1024 * 1024:
        raise ProtocolError(f"not a DICOM PDU (type 0x{pdu_type:02X}); is the peer DICOM/TLS?")
    return pdu_type, _recv_exact(sock, length)


def _items(data: bytes):  # type: ignore[no-untyped-def]
    pos = 0
    while pos + 4 <= len(data):
        item_type, _, length = struct.unpack(">BBH", data[pos : pos + 4])
        yield item_type, data[pos + 4 : pos + 4 + length]
        pos += 4 + length


@dataclass
class Accepted:
    """What the A-ASSOCIATE-AC said."""

    called: str
    calling: str
    max_pdu: int = 0
    contexts: list[tuple[int, int, str]] = field(default_factory=list)  # id, result, TS

    @property
    def transfer_syntax(self) -> str | None:
        """The accepted transfer syntax of context 1, or None when it was refused."""
        for cid, result, ts in self.contexts:
            if cid == 1 and result == 0:
                return ts
        return None

    def choose(self, preferred: tuple[str, ...]) -> tuple[int, str] | None:
        """(context id, transfer syntax) of the accepted context first in `preferred` order."""
        accepted = {ts: cid for cid, result, ts in self.contexts if result == 0}
        for ts in preferred:
            if ts in accepted:
                return accepted[ts], ts
        return None


def parse_accept(payload: bytes) -> Accepted:
    """The A-ASSOCIATE-AC payload."""
    called = payload[4:20].decode("ascii", "replace").strip()
    calling = payload[20:36].decode("ascii", "replace").strip()
    acc = Accepted(called=called, calling=calling)
    for item_type, body in _items(payload[68:]):
        if item_type == 0x21:
            ts = ""
            for sub_type, sub in _items(body[4:]):
                if sub_type == 0x40:
                    ts = sub.rstrip(b"\0 ").decode("ascii", "replace")
            acc.contexts.append((body[0], body[2], ts))
        elif item_type == 0x50:
            for sub_type, sub in _items(body):
                if sub_type == 0x51 and len(sub) == 4:
                    acc.max_pdu = struct.unpack(">L", sub)[0]
    return acc


def command_elements(command: bytes) -> dict[tuple[int, int], bytes]:
    """The elements of an Implicit VR Little Endian command set."""
    out: dict[tuple[int, int], bytes] = {}
    pos = 0
    while pos + 8 <= len(command):
        group, elem, length = struct.unpack("<HHL", command[pos : pos + 8])
        out[(group, elem)] = command[pos + 8 : pos + 8 + length]
        pos += 8 + length
    return out


def read_message(sock: socket.socket) -> tuple[dict[tuple[int, int], bytes], bytes | None]:
    """The next complete DIMSE message: its command set, and its data set's bytes (or None).

    P-DATA-TF fragments are joined; an A-ABORT raises `AbortPdu`, any other PDU `ProtocolError`.
    """
    command: dict[tuple[int, int], bytes] | None = None
    command_bytes: list[bytes] = []
    data: list[bytes] = []
    while True:
        pdu_type, payload = read_pdu(sock)
        if pdu_type == 0x07:
            source = payload[2] if len(payload) > 2 else 0
            raise AbortPdu(f"A-ABORT from {_ABORT_SOURCE.get(source, 'the peer')}")
        if pdu_type != 0x04:
            raise ProtocolError(f"expected P-DATA-TF, got PDU type 0x{pdu_type:02X}")
        pos = 0
        while pos + 6 <= len(payload):
            (length,) = struct.unpack(">L", payload[pos : pos + 4])
            header = payload[pos + 5]
            fragment = payload[pos + 6 : pos + 4 + length]
            pos += 4 + length
            if header & 0x01:  # command
                if command is not None:
                    raise ProtocolError("a command fragment after a complete command set")
                command_bytes.append(fragment)
                if header & 0x02:  # last fragment
                    command = command_elements(b"".join(command_bytes))
                    kind = command.get((0x0000, 0x0800), b"")
                    if len(kind) < 2 or struct.unpack("<H", kind[:2])[0] == NO_DATASET:
                        return command, None
            else:
                if command is None:
                    raise ProtocolError("a data set fragment before its command set")
                data.append(fragment)
                if header & 0x02:
                    return command, b"".join(data)


def read_command(sock: socket.socket) -> dict[tuple[int, int], bytes]:
    """The command set of the next complete DIMSE message (its data set, if any, is read too)."""
    return read_message(sock)[0]


@dataclass
class Response:
    """The fields of a DIMSE response command that a client acts on."""

    responding_to: int
    status: int
    error_comment: str = ""
    affected_sop_instance: str = ""


def _us(command: dict[tuple[int, int], bytes], elem: int) -> int | None:
    value = command.get((0x0000, elem))
    return struct.unpack("<H", value[:2])[0] if value is not None and len(value) >= 2 else None


def _text(command: dict[tuple[int, int], bytes], elem: int) -> str:
    return command.get((0x0000, elem), b"").decode("ascii", "replace").strip(" \0")


def parse_response(command: dict[tuple[int, int], bytes], expected_field: int) -> Response:
    """The response command `expected_field` (e.g. N_CREATE_RSP); `ProtocolError` otherwise."""
    field_ = _us(command, 0x0100)
    if field_ != expected_field:
        got = "no Command Field" if field_ is None else f"Command Field 0x{field_:04X}"
        raise ProtocolError(f"expected a response 0x{expected_field:04X}, got {got}")
    status = _us(command, 0x0900)
    if status is None:
        raise ProtocolError(f"response 0x{expected_field:04X} without a Status")
    return Response(
        responding_to=_us(command, 0x0120) or 0,
        status=status,
        error_comment=_text(command, 0x0902),
        affected_sop_instance=_text(command, 0x1000),
    )


def echo_status(command: dict[tuple[int, int], bytes]) -> int:
    """The Status of a C-ECHO-RSP command set."""
    return parse_response(command, C_ECHO_RSP).status


def request_association(
    sock: socket.socket,
    calling: str,
    called: str,
    abstract: str = VERIFICATION,
    transfer_syntaxes: tuple[str, ...] = TRANSFER_SYNTAXES,
    separate: bool = False,
) -> Accepted:
    """Send A-ASSOCIATE-RQ for `abstract`; the AC, or `Rejected`/`Aborted`/`ProtocolError`."""
    sock.sendall(associate_rq(calling, called, abstract, transfer_syntaxes, separate))
    pdu_type, payload = read_pdu(sock)
    if pdu_type == 0x03:
        raise Rejected(payload[1], payload[2], payload[3])
    if pdu_type == 0x07:
        raise AbortPdu("A-ABORT in answer to the association request")
    if pdu_type != 0x02:
        raise ProtocolError(f"unexpected PDU type 0x{pdu_type:02X} after A-ASSOCIATE-RQ")
    return parse_accept(payload)


def release(sock: socket.socket) -> None:
    """A-RELEASE-RQ, then wait for the RP (a peer that just closes is fine too)."""
    sock.sendall(RELEASE_RQ)
    try:
        while True:
            pdu_type, _ = read_pdu(sock)
            if pdu_type in (0x06, 0x07):
                return
    except (Aborted, OSError, ssl.SSLError):
        return
