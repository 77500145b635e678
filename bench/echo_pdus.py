"""The bytes of one C-ECHO association, written here by hand for `serve_assoc.py` (its raw
client) and `bare_tls_server.py` (the floor's fixed answers).

Nothing here imports tdwii's upper layer (`tdwii_cli.net`, `tdwii_cli.scp`), so the load
generator and the floor stay the same bytes and the same code whichever tdwii is measured
(`--baseline`) and however that layer is rewritten. The PDUs are those tdwii's own encoder
writes for the same association, but for the implementation version name: an
A-ASSOCIATE-RQ proposing Verification with Implicit VR Little Endian as context 1 (maximum
PDU 16384, tdwii's implementation class UID), a C-ECHO-RQ with message ID 1, an
A-RELEASE-RQ; and the AC (maximum PDU 16382), C-ECHO-RSP and RP answering them.
"""

from __future__ import annotations

import socket
import struct

VERIFICATION = "1.2.840.10008.1.1"
IMPLICIT_VR_LE = "1.2.840.10008.1.2"
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"
IMPLEMENTATION_CLASS_UID = "2.25.139514309086075461509278531098557105521"  # tdwii's
IMPLEMENTATION_VERSION = "TDWII_BENCH"

A_ASSOCIATE_RQ, A_ASSOCIATE_AC, A_ASSOCIATE_RJ = 0x01, 0x02, 0x03
P_DATA_TF, A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x04, 0x05, 0x06, 0x07
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030


class Closed(Exception):
    """The peer closed the connection in the middle of a PDU (or before one)."""


def pdu(pdu_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(payload)) + payload


def _item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def _uid(uid: str) -> bytes:
    raw = uid.encode()
    return raw + b"\0" * (len(raw) % 2)


def _user_information(max_pdu: int) -> bytes:
    return _item(
        0x50,
        _item(0x51, struct.pack(">L", max_pdu))
        + _item(0x52, IMPLEMENTATION_CLASS_UID.encode())
        + _item(0x55, IMPLEMENTATION_VERSION.encode()),
    )


def _head(called: str, calling: str) -> bytes:
    return (
        struct.pack(">HH", 1, 0)
        + called.encode().ljust(16)
        + calling.encode().ljust(16)
        + bytes(32)
        + _item(0x10, APPLICATION_CONTEXT.encode())
    )


def associate_rq(calling: str = "BENCH", called: str = "ANY-SCP") -> bytes:
    """Verification with Implicit VR Little Endian as presentation context 1."""
    context = _item(
        0x20,
        struct.pack(">BBBB", 1, 0, 0, 0)
        + _item(0x30, VERIFICATION.encode())
        + _item(0x40, IMPLICIT_VR_LE.encode()),
    )
    return pdu(A_ASSOCIATE_RQ, _head(called, calling) + context + _user_information(16384))


def associate_ac(calling: str = "BENCH", called: str = "ANY-SCP") -> bytes:
    """Context 1 accepted with Implicit VR Little Endian."""
    context = _item(0x21, struct.pack(">BBBB", 1, 0, 0, 0) + _item(0x40, IMPLICIT_VR_LE.encode()))
    return pdu(A_ASSOCIATE_AC, _head(called, calling) + context + _user_information(16382))


def _command(elements: list[tuple[int, bytes]]) -> bytes:
    """A command set (group 0000, Implicit VR Little Endian) with its group length."""
    body = b"".join(struct.pack("<HHL", 0, element, len(v)) + v for element, v in elements)
    return struct.pack("<HHLL", 0, 0x0000, 4, len(body)) + body


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


def _p_data(command: bytes) -> bytes:
    """One P-DATA-TF with one PDV: context 1, a command, the last fragment."""
    return pdu(P_DATA_TF, struct.pack(">LBB", len(command) + 2, 1, 0x03) + command)


ECHO_RQ = _p_data(
    _command(
        [
            (0x0002, _uid(VERIFICATION)),
            (0x0100, _us(C_ECHO_RQ)),
            (0x0110, _us(1)),  # Message ID
            (0x0800, _us(0x0101)),  # no data set
        ]
    )
)
ECHO_RSP = _p_data(
    _command(
        [
            (0x0002, _uid(VERIFICATION)),
            (0x0100, _us(C_ECHO_RSP)),
            (0x0120, _us(1)),  # Message ID Being Responded To
            (0x0800, _us(0x0101)),
            (0x0900, _us(0x0000)),  # Success
        ]
    )
)
RELEASE_RQ = pdu(A_RELEASE_RQ, bytes(4))
RELEASE_RP = pdu(A_RELEASE_RP, bytes(4))


def answer_titles(ac: bytes, rq_payload: bytes) -> bytes:
    """`ac` with the called and calling AE titles of the A-ASSOCIATE-RQ (its payload)."""
    return ac[:10] + rq_payload[4:36] + ac[42:]


QUICKACK = getattr(socket, "TCP_QUICKACK", None)  # Linux only


def quickack(sock: socket.socket) -> None:
    """Acknowledge what has arrived now, not when the delayed-ACK timer says (40 ms)."""
    if QUICKACK is not None:
        sock.setsockopt(socket.IPPROTO_TCP, QUICKACK, 1)


def _recv_exact(sock: socket.socket, n: int, ack: bool) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 16))
        if not chunk:
            raise Closed("the peer closed the connection")
        chunks.append(chunk)
        n -= len(chunk)
        if n and ack and not getattr(sock, "pending", int)():
            quickack(sock)  # the PDU is incomplete and we are about to wait for the rest
    return b"".join(chunks)


def read_pdu(sock: socket.socket, ack: bool = False) -> tuple[int, bytes]:
    """(PDU type, payload) of the next PDU (no limits: the peers here are trusted). With
    `ack`, a read that leaves the PDU incomplete sets TCP_QUICKACK before the next: a client
    with Nagle on that wrote the PDU in two parts (DCMTK writes a P-DATA-TF's header apart
    from its PDV) holds the second until the first is acknowledged."""
    pdu_type, _, length = struct.unpack(">BBL", _recv_exact(sock, 6, ack))
    if not A_ASSOCIATE_RQ <= pdu_type <= A_ABORT:
        raise ValueError(f"not a DICOM PDU (type 0x{pdu_type:02X})")
    return pdu_type, _recv_exact(sock, length, ack)


def echo_status(sock: socket.socket) -> int:
    """The Status of the C-ECHO-RSP in the next PDU (a command in one PDV, as every peer
    measured here sends it)."""
    kind, payload = read_pdu(sock)
    if kind != P_DATA_TF:
        raise RuntimeError(f"no C-ECHO-RSP (PDU type 0x{kind:02X})")
    length, _context, header = struct.unpack(">LBB", payload[:6])
    if not header & 0x01 or not header & 0x02:
        raise RuntimeError("the C-ECHO-RSP is not one command fragment")
    command = payload[6 : 4 + length]
    pos = 0
    while pos + 8 <= len(command):
        _group, element, size = struct.unpack("<HHL", command[pos : pos + 8])
        if element == 0x0900:
            return int(struct.unpack("<H", command[pos + 8 : pos + 10])[0])
        pos += 8 + size
    raise RuntimeError("a C-ECHO-RSP without a Status")
