"""DIMSE command sets and PDUs encoded by hand (`tdwii_cli.net.dimse`, `tdwii_cli.net.pdu`),
checked against pydicom's reading of the same bytes, and refused when malformed."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from pydicom.filereader import read_dataset

from tdwii_cli.net import dimse, pdu
from tdwii_cli.net.dimse import Command, MessageAssembler
from tdwii_cli.net.errors import PeerViolation
from tdwii_cli.net.framer import Framer

UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
UID = "1.2.3.4.5"  # odd length: padded with a NUL


def pydicom_view(command: Command) -> dict[str, object]:
    ds = read_dataset(BytesIO(command.encode()), is_implicit_VR=True, is_little_endian=True)
    return {elem.keyword: elem.value for elem in ds}


def test_requests_encode_as_pydicom_reads_them() -> None:
    get = Command(
        dimse.N_GET_RQ,
        message_id=7,
        sop_class=UPS_PUSH,
        sop_instance=UID,
        attribute_identifiers=(0x00741000, 0x00100020),
    )
    seen = pydicom_view(get)
    assert seen["CommandGroupLength"] == len(get.encode()) - 12
    assert seen["RequestedSOPClassUID"] == UPS_PUSH  # N-GET names its instance as Requested
    assert seen["RequestedSOPInstanceUID"] == UID
    assert seen["CommandField"] == 0x0110 and seen["MessageID"] == 7
    assert seen["CommandDataSetType"] == 0x0101
    assert list(seen["AttributeIdentifierList"]) == [0x00741000, 0x00100020]
    report = Command(
        dimse.N_EVENT_REPORT_RQ,
        message_id=9,
        sop_class=UPS_PUSH,
        sop_instance=UID,
        event_type=3,
        has_dataset=True,
    )
    seen = pydicom_view(report)
    assert seen["AffectedSOPClassUID"] == UPS_PUSH and seen["AffectedSOPInstanceUID"] == UID
    assert seen["EventTypeID"] == 3 and seen["CommandDataSetType"] != 0x0101


def test_responses_round_trip() -> None:
    request = Command(
        dimse.N_ACTION_RQ,
        message_id=3,
        sop_class=UPS_PUSH,
        sop_instance=UID,
        action_type=1,
        has_dataset=True,
    )
    rsp = request.response(0xC301, error_comment="the Transaction UID is not the performer's")
    back = Command.decode(rsp.encode())
    assert back == rsp
    assert back.field == dimse.N_ACTION_RSP and back.responding_to == 3
    assert back.is_response and back.name == "N-ACTION-RSP"
    assert pydicom_view(rsp)["AffectedSOPInstanceUID"] == UID  # responses: Affected
    long = request.response(0xC000, error_comment="x" * 200)
    assert len(Command.decode(long.encode()).error_comment) == dimse.MAX_ERROR_COMMENT


def _element(elem: int, value: bytes, group: int = 0) -> bytes:
    return struct.pack("<HHL", group, elem, len(value)) + value


@pytest.mark.parametrize(
    ("data", "words"),
    [
        (_element(0x0100, struct.pack("<HH", 0x0030, 0x0030)), "not one US value"),
        (_element(0x0100, b"\x30"), "not one US value"),
        (_element(0x0800, struct.pack("<H", 0x0101)), "without a Command Field"),
        (_element(0x0100, struct.pack("<H", 0x0030)), "without a Command Data Set Type"),
        (_element(0x0010, b"PN", group=0x0010), "outside group 0000"),
        (struct.pack("<HHL", 0, 0x0100, 400) + b"\x30\x00", "longer than the command set"),
        (b"\x00\x00\x00", "truncated"),
    ],
    ids=["multi-valued", "odd-length", "no-field", "no-data-set-type", "group", "length", "short"],
)
def test_malformed_command_sets_are_refused(data: bytes, words: str) -> None:
    with pytest.raises(PeerViolation, match=words):
        Command.decode(data)


def test_messages_are_fragmented_and_joined() -> None:
    command = Command(dimse.N_CREATE_RQ, message_id=1, sop_class=UPS_PUSH, has_dataset=True)
    data = bytes(range(256)) * 100
    wire = dimse.encode_message(5, command, data, max_pdu=1024)
    (message,) = _messages(wire)
    assert message.context_id == 5 and message.command == command and message.dataset == data
    lengths = []
    view = memoryview(wire)
    while view:
        (length,) = struct.unpack(">L", view[2:6])
        lengths.append(length)
        view = view[6 + length :]
    assert max(lengths) <= 1024 and len(lengths) > 20
    with pytest.raises(ValueError, match="has_dataset"):
        dimse.encode_message(1, command, None, 0)


def test_a_message_over_the_limit_is_refused_while_it_streams() -> None:
    command = Command(dimse.N_CREATE_RQ, message_id=1, sop_class=UPS_PUSH, has_dataset=True)
    wire = dimse.encode_message(1, command, bytes(100_000), max_pdu=16384)
    assembler = MessageAssembler(50_000)
    framer = Framer()
    framer.feed(wire)
    with pytest.raises(PeerViolation, match="longer than 50000"):
        while (unit := framer.next_pdu(lambda kind, length: None)) is not None:
            assembler.feed(unit[1])


def _messages(wire: bytes) -> list[dimse.Message]:
    """The messages whole P-DATA-TF PDUs carry, joined as the upper layer joins them."""
    framer, assembler, out = Framer(), MessageAssembler(), []
    framer.feed(wire)
    while (unit := framer.next_pdu(lambda kind, length: None)) is not None:
        assert unit[0] == pdu.P_DATA_TF
        out += assembler.feed(unit[1])
    return out


def test_associate_rq_carries_our_implementation_identity() -> None:
    from tdwii_cli.dicom.uids import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION

    rq = pdu.associate_rq("CALLING", "CALLED", [pdu.PresentationContext(1, UPS_PUSH, ("1.2",))])
    assert IMPLEMENTATION_CLASS_UID.encode() in rq
    assert IMPLEMENTATION_VERSION.encode() in rq and IMPLEMENTATION_VERSION.startswith("TDWII_")
    assert rq[10:26] == b"CALLED".ljust(16) and rq[26:42] == b"CALLING".ljust(16)
