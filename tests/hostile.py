"""A hostile DICOM acceptor for the client tests, written on `socket` from the standard's
byte layout (PS3.8 9.3, PS3.7 E): nothing of tdwii's upper layer is used, so the peer does
not share the bugs of what it tests.

`HostileScp(behaviour)` listens on 127.0.0.1 (an ephemeral port; TLS with `ssl_context`),
accepts every association (each proposed context with Explicit VR Little Endian when
offered) and hands every request to `behaviour(request)`, which returns the PDUs to send in
answer (an iterable, possibly endless: `endless_pending`). Plain TCP: the answers go out
from a thread of their own while the connection goes on reading, so a C-CANCEL-RQ is seen
while the stream runs. With TLS, two threads may not share an `SSLSocket`: answers go out
from the reading thread, so a TLS behaviour must be finite.

What the peer saw is kept: `requests` (Command Fields, C-CANCEL-RQ 0x0FFF included),
`cancelled` (set when a C-CANCEL-RQ arrives), `aborted` (an A-ABORT), `released` (an
A-RELEASE-RQ), `ended` (the client's connection closed), `sent` (responses sent so far).
"""

from __future__ import annotations

import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from peers import recv_exactly
from tdwii_cli.dicom import rawdataset as raw

EXPLICIT = "1.2.840.10008.1.2.1"
UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
C_FIND_RQ, C_CANCEL_RQ = 0x0020, 0x0FFF
A_ASSOCIATE_RQ, A_ASSOCIATE_AC, P_DATA_TF = 0x01, 0x02, 0x04
A_RELEASE_RQ, A_RELEASE_RP, A_ABORT = 0x05, 0x06, 0x07


def pdu(pdu_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(payload)) + payload


def item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def read_pdu(conn: socket.socket) -> tuple[int, bytes]:
    pdu_type, _, length = struct.unpack(">BBL", recv_exactly(conn, 6))
    return pdu_type, recv_exactly(conn, length)


def _cmd_element(elem: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b" "
    return struct.pack("<HHL", 0x0000, elem, len(value)) + value


def _us(value: int) -> bytes:
    return struct.pack("<H", value)


@dataclass(frozen=True)
class Request:
    """One request as received: its Command Field, Message ID and presentation context."""

    field: int
    message_id: int
    context_id: int
    sop_class: str = ""
    data: bytes = b""


def response(
    request: Request,
    status: int,
    comment: str | bytes = "",
    data: bytes | None = None,
    *,
    instance: str | bytes = "",
) -> bytes:
    """The response to `request` (Command Field | 0x8000) as one P-DATA-TF: the command set
    (Implicit VR LE), then the data set when given. `comment`, `instance`: bytes as they
    are (anything a hostile peer likes)."""
    elements = [
        _cmd_element(0x0002, request.sop_class.encode() or UPS_PUSH.encode()),
        _cmd_element(0x0100, _us(request.field | 0x8000)),
        _cmd_element(0x0120, _us(request.message_id)),
        _cmd_element(0x0800, _us(0x0000 if data is not None else 0x0101)),
        _cmd_element(0x0900, _us(status)),
    ]
    if comment:
        elements.append(_cmd_element(0x0902, _raw(comment)))
    if instance:
        elements.append(_cmd_element(0x1000, _raw(instance)))
    body = b"".join(elements)
    command = _cmd_element(0x0000, struct.pack("<L", len(body))) + body
    pdvs = struct.pack(">LBB", len(command) + 2, request.context_id, 0x03) + command
    if data is not None:
        pdvs += struct.pack(">LBB", len(data) + 2, request.context_id, 0x02) + data
    return pdu(P_DATA_TF, pdvs)


def _raw(text: str | bytes) -> bytes:
    return text if isinstance(text, bytes) else text.encode("utf-8")


def dataset(values: dict[int, tuple[bytes, str]], station: str = "") -> bytes:
    """An Explicit VR LE data set: `{tag: (VR, text)}`, and a Scheduled Station Name Code
    Sequence holding `station` when given (text as UTF-8, control characters and all)."""
    parts = [raw.text_element(tag, vr, text) for tag, (vr, text) in values.items()]
    if station:
        code = raw.text_element(0x00080100, b"SH", station)
        parts.append(raw.sequence_element(0x00404025, [code]))
    return raw.ordered(parts)


Behaviour = Callable[[Request, "Seen"], Iterable[bytes]]


def endless_pending(data: bytes, *, polite: bool = False, batch: int = 64) -> Behaviour:
    """C-FIND: Pending responses carrying `data`, `batch` in one `sendall`, for ever; or,
    `polite`, until a C-CANCEL-RQ comes, then the final Cancel (FE00). Other requests:
    Success."""

    def answer(request: Request, seen: Seen) -> Iterator[bytes]:
        if request.field != C_FIND_RQ:
            yield response(request, 0x0000)
            return
        chunk = response(request, 0xFF00, data=data) * batch
        while not (polite and seen.cancelled.is_set()):
            yield chunk
        yield response(request, 0xFE00)

    return answer


def answer(status: int, comment: str | bytes = "", data: bytes | None = None) -> Behaviour:
    """Every request answered once with `status`, `comment` and `data`; C-FIND: `data` as
    one Pending match first, then the final `status` without it."""

    def behaviour(request: Request, _seen: Seen) -> list[bytes]:
        if request.field == C_FIND_RQ:
            first = [response(request, 0xFF00, data=data)] if data is not None else []
            return [*first, response(request, status, comment)]
        return [response(request, status, comment, data)]

    return behaviour


def stall(matches: bytes | None = None, count: int = 0, *, polite: bool = False) -> Behaviour:
    """`count` Pending matches of `matches` to a C-FIND, then nothing, whatever comes (or,
    `polite`, the final Cancel once a C-CANCEL-RQ comes); any other request: no answer."""

    def behaviour(request: Request, seen: Seen) -> Iterator[bytes]:
        if request.field != C_FIND_RQ or matches is None:
            return
        yield from [response(request, 0xFF00, data=matches)] * count
        if polite and seen.cancelled.wait(30):
            yield response(request, 0xFE00)

    return behaviour


@dataclass
class Seen:
    """What the hostile peer saw of its clients (see the module docstring)."""

    requests: list[int] = field(default_factory=list)
    cancelled: threading.Event = field(default_factory=threading.Event)
    aborted: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    answered: threading.Event = field(default_factory=threading.Event)  # first PDU sent
    sent: int = 0  # `sendall`s of answers done (`endless_pending`: a batch each)
    cancelled_at: float = 0.0  # time.monotonic() of the C-CANCEL-RQ


class HostileScp:
    """See the module docstring; `port`, `seen`, `close()`."""

    def __init__(
        self,
        behaviour: Behaviour,
        *,
        ssl_context: ssl.SSLContext | None = None,
        ae_title: bytes = b"HOSTILE",
    ) -> None:
        self.behaviour = behaviour
        self.ssl_context = ssl_context
        self.ae_title = ae_title.ljust(16)[:16]
        self.seen = Seen()
        self._stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self._threads: list[threading.Thread] = []
        self._spawn(self._accept)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, conn)

    def _serve(self, raw_conn: socket.socket) -> None:
        conn = raw_conn
        try:
            raw_conn.settimeout(30)
            if self.ssl_context is not None:
                conn = self.ssl_context.wrap_socket(raw_conn, server_side=True)
            self._associate(conn)
            self._read(conn)
        except (OSError, ConnectionError, struct.error):
            pass
        finally:
            self.seen.ended.set()
            conn.close()

    def _associate(self, conn: socket.socket) -> None:
        pdu_type, rq = read_pdu(conn)
        assert pdu_type == A_ASSOCIATE_RQ, pdu_type
        self._contexts: dict[int, str] = {}
        accepted = b""
        pos = 68  # protocol version, reserved, called and calling AE, 32 reserved bytes
        while pos + 4 <= len(rq):
            item_type, _, length = struct.unpack(">BBH", rq[pos : pos + 4])
            body = rq[pos + 4 : pos + 4 + length]
            if item_type == 0x20:
                cid, abstract, syntaxes = _context(body)
                self._contexts[cid] = abstract
                syntax = EXPLICIT if EXPLICIT in syntaxes else syntaxes[0]
                accepted += item(0x21, bytes([cid, 0, 0, 0]) + item(0x40, syntax.encode()))
            pos += 4 + length
        head = struct.pack(">HH", 1, 0) + self.ae_title + rq[20:36] + bytes(32)
        user = item(0x50, item(0x51, struct.pack(">L", 16384)) + item(0x52, b"1.2.3.4"))
        context = item(0x10, b"1.2.840.10008.3.1.1.1")
        conn.sendall(pdu(A_ASSOCIATE_AC, head + context + accepted + user))

    def _read(self, conn: socket.socket) -> None:
        command, data = b"", b""
        while True:
            pdu_type, payload = read_pdu(conn)
            if pdu_type == A_RELEASE_RQ:
                self.seen.released.set()
                conn.sendall(pdu(A_RELEASE_RP, bytes(4)))
                return
            if pdu_type == A_ABORT:
                self.seen.aborted.set()
                return
            pos = 0
            while pos + 6 <= len(payload):
                (length,) = struct.unpack(">L", payload[pos : pos + 4])
                cid, header = payload[pos + 4], payload[pos + 5]
                fragment = payload[pos + 6 : pos + 4 + length]
                pos += 4 + length
                if header & 0x01:
                    command += fragment
                else:
                    data += fragment
                if not header & 0x02:
                    continue
                fields = _command_fields(command)
                if header & 0x01 and fields.get(0x0800, 0x0101) != 0x0101:
                    continue  # the data set follows
                self._request(conn, cid, fields, data)
                command, data = b"", b""

    def _request(self, conn: socket.socket, cid: int, fields: dict[int, int], data: bytes) -> None:
        field_ = fields.get(0x0100, 0)
        self.seen.requests.append(field_)
        if field_ == C_CANCEL_RQ:
            self.seen.cancelled_at = time.monotonic()
            self.seen.cancelled.set()
            return
        request = Request(field_, fields.get(0x0110, 0), cid, self._contexts.get(cid, ""), data)
        answers = self.behaviour(request, self.seen)
        if self.ssl_context is None:
            self._spawn(self._send, conn, answers)
        else:
            self._send(conn, answers)

    def _send(self, conn: socket.socket, answers: Iterable[bytes]) -> None:
        try:
            for chunk in answers:
                if self._stop.is_set():
                    return
                conn.sendall(chunk)
                self.seen.sent += 1
                self.seen.answered.set()
        except OSError:
            pass

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(5)


def _context(body: bytes) -> tuple[int, str, list[str]]:
    """(id, abstract syntax, transfer syntaxes) of a proposed presentation context item."""
    cid, pos = body[0], 4
    abstract, syntaxes = "", []
    while pos + 4 <= len(body):
        sub_type, _, length = struct.unpack(">BBH", body[pos : pos + 4])
        value = body[pos + 4 : pos + 4 + length].decode("ascii").rstrip("\0 ")
        if sub_type == 0x30:
            abstract = value
        elif sub_type == 0x40:
            syntaxes.append(value)
        pos += 4 + length
    return cid, abstract, syntaxes


def _command_fields(command: bytes) -> dict[int, int]:
    """The US elements of a command set (Implicit VR LE) by element number."""
    out, pos = {}, 0
    while pos + 8 <= len(command):
        group, elem, length = struct.unpack("<HHL", command[pos : pos + 8])
        if group == 0x0000 and length == 2:
            out[elem] = struct.unpack("<H", command[pos + 8 : pos + 10])[0]
        pos += 8 + length
    return out
