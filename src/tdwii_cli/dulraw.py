"""A minimal DICOM upper layer client for Verification, directly on sockets.

`tdwii echo` uses it instead of pynetdicom: no pydicom/pynetdicom import, no
polling threads, one process in about the time of DCMTK's echoscu. It speaks
exactly A-ASSOCIATE-RQ/AC/RJ, P-DATA-TF (C-ECHO), A-RELEASE-RQ/RP and A-ABORT
(PS3.8 section 9.3), and the benchmark's load generator uses it too.
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
) -> bytes:
    """An A-ASSOCIATE-RQ PDU proposing one presentation context (id 1)."""
    ts = b"".join(_item(0x40, uid.encode()) for uid in transfer_syntaxes)
    pc = _item(0x20, struct.pack(">BBBB", 1, 0, 0, 0) + _item(0x30, abstract.encode()) + ts)
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


def echo_rq(message_id: int, context_id: int = 1) -> bytes:
    """A P-DATA-TF PDU with one C-ECHO-RQ command (Implicit VR Little Endian)."""
    uid = VERIFICATION.encode() + b"\0"  # even length
    elements = (
        _element(0x0000, 0x0002, uid)
        + _element(0x0000, 0x0100, struct.pack("<H", 0x0030))
        + _element(0x0000, 0x0110, struct.pack("<H", message_id))
        + _element(0x0000, 0x0800, struct.pack("<H", 0x0101))
    )
    command = _element(0x0000, 0x0000, struct.pack("<L", len(elements))) + elements
    return _pdu(0x04, struct.pack(">LBB", len(command) + 2, context_id, 0x03) + command)


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


def read_command(sock: socket.socket) -> dict[tuple[int, int], bytes]:
    """The next complete DIMSE command set (P-DATA-TF fragments joined)."""
    data = b""
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
                data += fragment
                if header & 0x02:  # last fragment
                    return command_elements(data)


def echo_status(command: dict[tuple[int, int], bytes]) -> int:
    """The Status of a C-ECHO-RSP command set."""
    field_ = command.get((0x0000, 0x0100))
    if field_ is None or struct.unpack("<H", field_[:2])[0] != 0x8030:
        raise ProtocolError("the answer is not a C-ECHO-RSP")
    status = command.get((0x0000, 0x0900))
    if status is None or len(status) < 2:
        raise ProtocolError("C-ECHO-RSP without a Status")
    return struct.unpack("<H", status[:2])[0]


def request_association(
    sock: socket.socket,
    calling: str,
    called: str,
    abstract: str = VERIFICATION,
    transfer_syntaxes: tuple[str, ...] = TRANSFER_SYNTAXES,
) -> Accepted:
    """Send A-ASSOCIATE-RQ for `abstract`; the AC, or `Rejected`/`Aborted`/`ProtocolError`."""
    sock.sendall(associate_rq(calling, called, abstract, transfer_syntaxes))
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
