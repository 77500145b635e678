"""The upper layer from bytes (`tdwii_cli.net.upper`, `framer`, `machine`, `negotiation`):
both roles driven by feeding bytes and calling primitives, no socket, in milliseconds.

Every malformed case the socket tests meet (test_serve_attacks.py, test_association.py)
is here as bytes, with the A-ABORT reason it earns, plus what sockets cannot show
reliably: a PDU dripped one byte at a time, two messages completed by one PDU, a release
collision on both sides, the whole PS3.8 state table.
"""

from __future__ import annotations

import struct

import pytest

from tdwii_cli.dicom.uids import (
    APPLICATION_CONTEXT,
    EXPLICIT_VR_LE,
    IMPLICIT_VR_LE,
    UPS_PUSH,
    VERIFICATION,
)
from tdwii_cli.net import dimse, errors, pdu
from tdwii_cli.net.dimse import Command
from tdwii_cli.net.errors import PeerAborted, PeerClosed, PeerViolation
from tdwii_cli.net.framer import Framer
from tdwii_cli.net.machine import TABLE, Event, State
from tdwii_cli.net.negotiation import Acceptance, Negotiated, Refusal
from tdwii_cli.net.upper import (
    AssociateAccepted,
    AssociateRejected,
    AssociateRequested,
    Closed,
    LocalMisuse,
    MessageReceived,
    ReleaseConfirmed,
    ReleaseRequested,
    Role,
    UpperEvent,
    UpperLayer,
)

CONTEXTS = [
    pdu.PresentationContext(1, VERIFICATION, (EXPLICIT_VR_LE, IMPLICIT_VR_LE)),
    pdu.PresentationContext(3, UPS_PUSH, (EXPLICIT_VR_LE,)),
]
RQ = pdu.associate_rq("SCU", "SCP", CONTEXTS)
ECHO = Command(dimse.C_ECHO_RQ, message_id=1, sop_class=VERIFICATION)
ECHO_RSP = ECHO.response(0)


def events(layer: UpperLayer, data: bytes = b"") -> list[UpperEvent]:
    """Feed `data`; every event it completes."""
    if data:
        layer.receive_data(data)
    out = []
    while (event := layer.next_event()) is not None:
        out.append(event)
        if isinstance(event, Closed):
            break
    return out


def acceptor(max_pdata: int = 16384, **kw: object) -> UpperLayer:
    return UpperLayer(Role.ACCEPTOR, max_pdata=max_pdata, **kw)  # type: ignore[arg-type]


def established_acceptor(**kw: object) -> UpperLayer:
    layer = acceptor(**kw)
    (requested,) = events(layer, RQ)
    assert isinstance(requested, AssociateRequested)
    layer.accept(_ac(requested.request))
    return layer


def established_requestor() -> UpperLayer:
    layer = UpperLayer(Role.REQUESTOR)
    layer.request(RQ)
    rq = pdu.parse_associate_rq(RQ[6:])
    (accepted,) = events(layer, _ac(rq))
    assert isinstance(accepted, AssociateAccepted)
    return layer


def _ac(rq: pdu.AssociateRQ) -> bytes:
    return pdu.associate_ac(rq, [(cx.id, 0, cx.transfer_syntaxes[0]) for cx in rq.contexts], 16382)


def violation(layer: UpperLayer, data: bytes) -> PeerViolation:
    layer.receive_data(data)
    with pytest.raises(PeerViolation) as info:
        while layer.next_event() is not None:
            pass
    assert layer.state is State.AWAITING_CLOSE
    abort = info.value.abort
    assert abort[:6] == bytes((7, 0, 0, 0, 0, 4)) and abort[8] == 2  # service provider
    assert abort[9] == info.value.reason
    return info.value


# -- the standard's table ----------------------------------------------------------------


def test_the_state_table_is_ps38_table_9_10_as_pynetdicom_has_it_too() -> None:
    from pynetdicom.fsm import TRANSITION_TABLE  # an independent transcription

    theirs = {(int(e[3:]), int(s[3:])): a for (e, s), a in TRANSITION_TABLE.items()}
    ours = {(e.value, s.value): a for (e, s), a in TABLE.items()}
    assert ours == theirs
    assert len(ours) > 120


# -- both roles, the normal way ------------------------------------------------------------


def test_requestor_associates_exchanges_and_releases() -> None:
    layer = UpperLayer(Role.REQUESTOR)
    assert layer.request(RQ) == RQ and layer.state is State.AWAITING_AC
    (accepted,) = events(layer, _ac(pdu.parse_associate_rq(RQ[6:])))
    assert isinstance(accepted, AssociateAccepted) and accepted.accept.max_pdu == 16382
    assert [c[:2] for c in accepted.accept.contexts] == [(1, 0), (3, 0)]
    wire = layer.send_message(1, ECHO, None, 16382)
    assert wire[0] == pdu.P_DATA_TF
    (answer,) = events(layer, dimse.encode_message(1, ECHO_RSP, None, 0))
    assert isinstance(answer, MessageReceived) and answer.message.command == ECHO_RSP
    assert layer.release() == pdu.RELEASE_RQ and layer.state is State.AWAITING_RELEASE_RP
    assert events(layer, pdu.RELEASE_RP) == [ReleaseConfirmed()]
    assert layer.state is State.IDLE


def test_acceptor_answers_serves_releases_and_awaits_the_close() -> None:
    layer = acceptor()
    assert layer.state is State.AWAITING_RQ
    (requested,) = events(layer, RQ)
    assert isinstance(requested, AssociateRequested)
    assert requested.request.calling == "SCU" and len(requested.request.contexts) == 2
    assert layer.state is State.AWAITING_LOCAL_ASSOCIATE_RESPONSE
    layer.accept(_ac(requested.request))
    (request,) = events(layer, dimse.encode_message(1, ECHO, None, 0))
    assert isinstance(request, MessageReceived) and request.message.command == ECHO
    layer.send_message(1, ECHO_RSP, None, 16382)
    assert events(layer, pdu.RELEASE_RQ) == [ReleaseRequested()]
    assert layer.release_response() == pdu.RELEASE_RP
    assert layer.state is State.AWAITING_CLOSE  # Sta13: the requestor closes
    assert events(layer, pdu.RELEASE_RQ) == []  # anything before the close is ignored (AA-6)
    layer.receive_data(b"")
    assert layer.next_event() == Closed() and layer.state is State.IDLE


def test_a_pdu_dripped_one_byte_at_a_time_gives_the_same_events() -> None:
    layer = UpperLayer(Role.REQUESTOR)
    layer.request(RQ)
    wire = _ac(pdu.parse_associate_rq(RQ[6:]))
    for byte in wire[:-1]:
        assert events(layer, bytes([byte])) == []
        assert layer.mid_pdu
    (accepted,) = events(layer, wire[-1:])
    assert isinstance(accepted, AssociateAccepted) and not layer.mid_pdu


def test_two_messages_completed_by_one_pdu_are_both_delivered() -> None:
    layer = established_requestor()
    one = dimse.encode_message(1, ECHO.response(0xFF00, responding_to=1), None, 0)
    two = dimse.encode_message(1, ECHO.response(0x0000, responding_to=1), None, 0)
    # one P-DATA-TF with both PDVs
    joined = pdu.encode(pdu.P_DATA_TF, one[6:] + two[6:])
    got = events(layer, joined)
    assert [e.message.command.status for e in got if isinstance(e, MessageReceived)] == [
        0xFF00,
        0x0000,
    ]


def test_several_pdus_in_one_read_and_a_message_in_many_fragments() -> None:
    layer = established_acceptor()
    create = Command(dimse.N_CREATE_RQ, message_id=2, sop_class=UPS_PUSH, has_dataset=True)
    data = bytes(range(256)) * 40
    wire = dimse.encode_message(3, create, data, max_pdu=512) + dimse.encode_message(
        1, ECHO, None, 0
    )
    got = events(layer, wire)
    assert [type(e) for e in got] == [MessageReceived, MessageReceived]
    first = got[0]
    assert isinstance(first, MessageReceived) and first.message.dataset == data


def test_what_a_requestor_sends_before_the_ac_is_served_after_it() -> None:
    layer = acceptor()
    layer.receive_data(RQ + dimse.encode_message(1, ECHO, None, 0))
    requested = layer.next_event()
    assert isinstance(requested, AssociateRequested)
    layer.accept(_ac(requested.request))  # the early P-DATA-TF waited in the layer
    (request,) = events(layer)
    assert isinstance(request, MessageReceived) and request.message.command == ECHO


def test_a_rejection_is_an_event_with_the_standards_words() -> None:
    layer = UpperLayer(Role.REQUESTOR)
    layer.request(RQ)
    (rejected,) = events(layer, pdu.associate_rj(2, 3, 2))
    assert isinstance(rejected, AssociateRejected)
    assert str(rejected.reject) == "rejected (transient): local limit exceeded"
    assert layer.state is State.IDLE


@pytest.mark.parametrize("role", [Role.REQUESTOR, Role.ACCEPTOR])
def test_a_release_collision_ends_on_both_sides(role: Role) -> None:
    layer = established_requestor() if role is Role.REQUESTOR else established_acceptor()
    layer.release()
    assert events(layer, pdu.RELEASE_RQ) == [ReleaseRequested(collision=True)]
    if role is Role.REQUESTOR:  # Sta9: the requestor answers first, then awaits the RP
        assert layer.state is State.COLLISION_REQUESTOR_AWAITING_LOCAL
        layer.release_response()
        assert events(layer, pdu.RELEASE_RP) == [ReleaseConfirmed()]
        assert layer.state is State.IDLE
    else:  # Sta10: the acceptor awaits the requestor's RP, then answers
        assert layer.state is State.COLLISION_ACCEPTOR_AWAITING_RP
        assert events(layer, pdu.RELEASE_RP) == [ReleaseConfirmed()]
        layer.release_response()
        assert layer.state is State.AWAITING_CLOSE


def test_abort_and_close_are_raised_with_what_the_peer_said() -> None:
    layer = established_requestor()
    layer.receive_data(pdu.abort(2, errors.ABORT_INVALID_PARAMETER))
    with pytest.raises(PeerAborted) as info:
        layer.next_event()
    assert (info.value.source, info.value.reason) == (2, 6)
    assert "service provider" in str(info.value) and layer.state is State.IDLE

    layer = established_acceptor()
    layer.receive_data(dimse.encode_message(1, ECHO, None, 0)[:9])
    layer.receive_data(b"")
    with pytest.raises(PeerClosed, match="middle of a PDU"):
        events(layer)


def test_our_abort_is_sent_only_while_there_is_someone_to_tell() -> None:
    assert established_acceptor().abort(2, 0) == pdu.abort(2, 0)
    fresh = acceptor()
    assert fresh.abort(2, 0) == pdu.abort(2, 0)  # a slow requestor is told why
    ended = established_acceptor()
    events(ended, pdu.RELEASE_RQ)
    ended.release_response()
    assert ended.abort() == b""  # Sta13: the association is over


def test_a_primitive_the_state_does_not_allow_is_our_bug() -> None:
    layer = acceptor()
    with pytest.raises(LocalMisuse, match="Evt9 is not possible in Sta2"):
        layer.send_message(1, ECHO, None, 0)
    with pytest.raises(LocalMisuse):
        UpperLayer(Role.REQUESTOR).release()


# -- malformed and unexpected, each with its A-ABORT reason --------------------------------


def test_an_unknown_pdu_type_is_refused_on_its_header() -> None:
    exc = violation(established_acceptor(), b"\x42\x00\x00\x00\x00\x04")  # no body needed
    assert exc.reason == errors.ABORT_UNRECOGNIZED_PDU and "0x42" in str(exc)


def test_a_p_data_over_our_maximum_is_refused_on_its_header() -> None:
    exc = violation(established_acceptor(), struct.pack(">BBL", 4, 0, 0xFFFFFFF0))
    assert exc.reason == errors.ABORT_INVALID_PARAMETER and "over our maximum 16384" in str(exc)


def test_an_associate_pdu_of_4_gb_is_refused_on_its_header() -> None:
    layer = UpperLayer(Role.REQUESTOR)
    layer.request(RQ)
    assert "over our maximum" in str(violation(layer, struct.pack(">BBL", 2, 0, 0xFFFFFFF0)))
    assert "over our maximum" in str(violation(acceptor(), struct.pack(">BBL", 1, 0, 1 << 20)))


@pytest.mark.parametrize(
    ("role", "wire", "words"),
    [
        (Role.ACCEPTOR, dimse.encode_message(1, ECHO, None, 0), "P-DATA-TF in Sta2"),
        (Role.ACCEPTOR, pdu.RELEASE_RQ, "A-RELEASE-RQ in Sta2"),
        (Role.REQUESTOR, RQ, "A-ASSOCIATE-RQ in Sta5"),
        (Role.REQUESTOR, dimse.encode_message(1, ECHO, None, 0), "P-DATA-TF in Sta5"),
    ],
)
def test_a_pdu_the_state_does_not_allow_is_an_unexpected_pdu(
    role: Role, wire: bytes, words: str
) -> None:
    layer = UpperLayer(role)
    if role is Role.REQUESTOR:
        layer.request(RQ)
    exc = violation(layer, wire[:6])  # judged on the header alone
    assert exc.reason == errors.ABORT_UNEXPECTED_PDU and words in str(exc)


def test_an_ac_or_rq_on_an_established_association_is_unexpected() -> None:
    assert "A-ASSOCIATE-RQ in Sta6" in str(violation(established_acceptor(), RQ))
    layer = established_requestor()
    assert "A-ASSOCIATE-AC in Sta6" in str(violation(layer, _ac(pdu.parse_associate_rq(RQ[6:]))))


def test_an_rq_after_the_association_ended_is_refused() -> None:
    layer = established_acceptor()
    events(layer, pdu.RELEASE_RQ)
    layer.release_response()
    assert "Sta13" in str(violation(layer, RQ))  # AA-7


def _rq_with(items: bytes, head: bytes | None = None) -> bytes:
    head = head or (struct.pack(">HH", 1, 0) + b"SCP".ljust(16) + b"SCU".ljust(16) + bytes(32))
    return pdu.encode(pdu.A_ASSOCIATE_RQ, head + items)


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


APP = _item(0x10, APPLICATION_CONTEXT.encode())


def _pc(cid: int, abstract: bytes = VERIFICATION.encode(), *ts: bytes) -> bytes:
    syntaxes = b"".join(_item(0x40, t) for t in (ts or (EXPLICIT_VR_LE.encode(),)))
    return _item(0x20, bytes((cid, 0, 0, 0)) + _item(0x30, abstract) + syntaxes)


@pytest.mark.parametrize(
    ("wire", "words"),
    [
        (bytes(RQ[: 6 + 68 + 2]) + b"\xff\xff" + RQ[6 + 68 + 4 :], "overruns A-ASSOCIATE-RQ"),
        (_rq_with(APP + _pc(2)), "id 2 is even or repeated"),
        (_rq_with(APP + _pc(1) + _pc(1)), "id 1 is even or repeated"),
        (_rq_with(APP), "without a presentation context"),
        (_rq_with(_pc(1)), "without an application context"),
        (_rq_with(APP + _pc(1, b"1.2.x")), "abstract syntax is not a UID"),
        (_rq_with(APP + _item(0x20, bytes((1, 0, 0, 0)) + _item(0x30, b"1.2"))), "lacks"),
        (_rq_with(APP + _pc(1) + _item(0x50, _item(0x51, b"\0\0\x40"))), "not 4 bytes"),
        (_rq_with(APP + _pc(1) + _item(0x50, _item(0x54, b"\0\x09" + b"1.2"))), "role"),
        (pdu.encode(pdu.A_ASSOCIATE_RQ, bytes(20)), "too short"),
    ],
    ids=[
        "item-overruns",
        "even-id",
        "repeated-id",
        "no-context",
        "no-application-context",
        "not-a-uid",
        "no-transfer-syntax",
        "max-length-3-bytes",
        "role-selection-short",
        "short-rq",
    ],
)
def test_a_malformed_associate_rq_is_aborted_with_invalid_parameter(
    wire: bytes, words: str
) -> None:
    exc = violation(acceptor(), wire)
    assert exc.reason == errors.ABORT_INVALID_PARAMETER
    assert "malformed A-ASSOCIATE-RQ" in str(exc) and words in str(exc)


def test_a_truncated_ac_is_a_violation_for_the_requestor() -> None:
    layer = UpperLayer(Role.REQUESTOR)
    layer.request(RQ)
    exc = violation(layer, struct.pack(">BBL", 2, 0, 10) + bytes(10))
    assert "malformed A-ASSOCIATE-AC" in str(exc)


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        (b"", "without a PDV"),
        (b"\0\0\0\x09\x01\x03abc", "does not fit"),  # claims 9, carries 5
        (b"\0\0\0\x01\x01", "truncated PDV"),
        (b"\0\0\0\x03\x01\x00x", "before its command set"),  # a data set fragment first
        (b"\0\0\0\x0a\x01\x03" + struct.pack("<HHL", 0, 0x100, 4), "longer than the command"),
    ],
)
def test_malformed_p_data_is_aborted(payload: bytes, words: str) -> None:
    exc = violation(established_acceptor(), pdu.encode(pdu.P_DATA_TF, payload))
    assert exc.reason == errors.ABORT_INVALID_PARAMETER and words in str(exc)


def test_a_multi_valued_command_field_is_aborted() -> None:
    body = struct.pack("<HHL", 0, 0x100, 4) + struct.pack("<HH", 0x30, 0x30)
    body += struct.pack("<HHL", 0, 0x800, 2) + struct.pack("<H", 0x101)
    command = struct.pack("<HHLL", 0, 0, 4, len(body)) + body
    wire = pdu.encode(pdu.P_DATA_TF, struct.pack(">LBB", len(command) + 2, 1, 3) + command)
    assert "not one US value" in str(violation(established_acceptor(), wire))


def test_fragments_of_one_message_on_two_contexts_are_aborted() -> None:
    create = Command(dimse.N_CREATE_RQ, message_id=2, sop_class=UPS_PUSH, has_dataset=True)
    first = dimse.encode_message(3, create, b"x" * 10, 0)
    command_pdu_len = 6 + struct.unpack(">L", first[2:6])[0]
    data_pdu = bytearray(first[command_pdu_len:])
    data_pdu[10] = 1  # the data set fragment claims context 1
    wire = first[:command_pdu_len] + bytes(data_pdu)
    assert "different contexts" in str(violation(established_acceptor(), wire))


def test_a_release_in_the_middle_of_a_message_is_aborted() -> None:
    create = Command(dimse.N_CREATE_RQ, message_id=2, sop_class=UPS_PUSH, has_dataset=True)
    command_only = pdu.p_data(3, create.encode(), None, 0)  # its data set never comes
    exc = violation(established_acceptor(), command_only + pdu.RELEASE_RQ)
    assert "middle of a message" in str(exc)


def test_a_data_set_over_the_message_limit_is_discarded_or_refused() -> None:
    create = Command(dimse.N_CREATE_RQ, message_id=2, sop_class=UPS_PUSH, has_dataset=True)
    wire = dimse.encode_message(3, create, bytes(100_000), max_pdu=16384)
    (too_big,) = events(established_acceptor(max_message=50_000, discard=True), wire)
    assert isinstance(too_big, MessageReceived) and too_big.message.too_large
    assert too_big.message.dataset is None
    assert "longer than 50000" in str(violation(established_acceptor(max_message=50_000), wire))


def test_a_fixed_size_pdu_too_short_is_invalid() -> None:
    layer = UpperLayer(Role.REQUESTOR)
    layer.request(RQ)
    assert "too short" in str(violation(layer, struct.pack(">BBL", 3, 0, 0)))


# -- the framer ------------------------------------------------------------------------------


def test_the_framer_says_what_is_missing_and_checks_each_header_once() -> None:
    framer = Framer()
    seen: list[tuple[int, int]] = []
    assert framer.missing == 6
    framer.feed(pdu.RELEASE_RQ[:3])
    assert framer.next_pdu(lambda k, n: seen.append((k, n))) is None and framer.missing == 3
    framer.feed(pdu.RELEASE_RQ[3:7])
    assert framer.next_pdu(lambda k, n: seen.append((k, n))) is None and framer.missing == 3
    framer.feed(pdu.RELEASE_RQ[7:] + pdu.RELEASE_RP)
    assert framer.next_pdu(lambda k, n: seen.append((k, n))) == (5, bytes(4))
    assert framer.next_pdu(lambda k, n: seen.append((k, n))) == (6, bytes(4))
    assert seen == [(5, 4), (6, 4)] and framer.buffered == 0


# -- negotiation from bytes ------------------------------------------------------------------


def _answer(rq: bytes, **kw: object) -> Negotiated | Refusal:
    acceptance = Acceptance("SCP", [VERIFICATION], [EXPLICIT_VR_LE], 16382, **kw)  # type: ignore[arg-type]
    return acceptance.answer(pdu.parse_associate_rq(rq[6:]))


def test_negotiation_accepts_what_it_serves_in_our_order_and_names_the_rest() -> None:
    answer = _answer(RQ)
    assert isinstance(answer, Negotiated)
    assert {cid: cx.transfer_syntax for cid, cx in answer.contexts.items()} == {1: EXPLICIT_VR_LE}
    assert answer.rejected == [(UPS_PUSH, "abstract syntax not supported")]
    ac = pdu.parse_associate_ac(answer.ac[6:])
    assert ac.called == "SCP" and ac.calling == "SCU" and ac.max_pdu == 16382


@pytest.mark.parametrize(
    ("rq", "kw", "reason", "words"),
    [
        (pdu.associate_rq("BAD\x1b[31m", "SCP", CONTEXTS), {}, 3, "control characters"),
        (pdu.associate_rq("   ", "SCP", CONTEXTS), {}, 3, "is empty"),
        (pdu.associate_rq("SCU", "OTHER", CONTEXTS), {"require_called": True}, 7, "not ours"),
        (pdu.associate_rq("SCU", "SCP", CONTEXTS, max_pdu=20), {}, 1, "too small"),
    ],
)
def test_negotiation_refusals(rq: bytes, kw: dict[str, object], reason: int, words: str) -> None:
    answer = _answer(rq, **kw)
    assert isinstance(answer, Refusal) and answer.reason == reason and words in answer.words
    assert answer.encode()[0] == pdu.A_ASSOCIATE_RJ


def test_an_acceptor_built_from_the_machine_refuses_every_pdu_before_the_rq() -> None:
    for kind in (2, 3, 4, 5, 6):
        layer = acceptor()
        exc = violation(layer, struct.pack(">BBL", kind, 0, 4) + bytes(4))
        assert exc.reason == errors.ABORT_UNEXPECTED_PDU
    layer = acceptor()
    layer.receive_data(pdu.abort())
    with pytest.raises(PeerAborted):
        layer.next_event()
    assert (Event.ABORT_RECEIVED, State.AWAITING_RQ) in TABLE
