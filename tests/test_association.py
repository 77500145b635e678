"""The one association implementation (`tdwii_cli.net`), at the library level, against real peers.

Every way an association fails is a typed error with its exit code, produced by a
real peer: `tdwii serve --mtls`, a pynetdicom Verification SCP that insists on
its AE title, and hand-written sockets that lie about lengths. The generic
request path is driven with C-FIND (pending responses, C-CANCEL), N-GET and
N-ACTION against `tdwii serve`. The same refusals as a user meets them, with
their hints, are tested end to end in test_echo.py and test_echo_tls.py.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from conftest import PKI_CA, TdwiiServer, free_port, tls_options
from peers import OneShotPeer
from tdwii_cli import exitcodes
from tdwii_cli.cli.hints import hint_for
from tdwii_cli.client.create import Peer, prepare_datasets, send
from tdwii_cli.dicom import codec
from tdwii_cli.dicom.uids import EXPLICIT_VR_LE, UPS_PUSH, UPS_QUERY, UPS_WATCH, VERIFICATION
from tdwii_cli.net import pdu
from tdwii_cli.net.association import AcceptedContext, Association, open_association, propose
from tdwii_cli.net.dimse import (
    C_ECHO_RQ,
    C_FIND_RQ,
    N_ACTION_RQ,
    N_GET_RQ,
    Command,
)
from tdwii_cli.net.errors import (
    AssociationRejected,
    ClosedBeforeAnswer,
    ContextRefused,
    HandshakeFailed,
    NetError,
    PeerTimeout,
    ProtocolViolation,
    Unreachable,
)
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.context import build_client_context
from tdwii_cli.tls.options import TlsOptions
from tdwii_cli.ups.workitem import build_workitem

CT_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
OPTIONS = ScuOptions(connect_timeout=5, acse_timeout=5, dimse_timeout=5)


def fails(host: str, port: int, tls: TlsOptions | None, abstract: str = VERIFICATION, **kw: str):  # type: ignore[no-untyped-def]
    """The `NetError` raised by associating (the test fails if none is)."""
    ctx = build_client_context(tls) if tls is not None and tls.enabled else None
    timeouts: dict[str, float] = {"connect_timeout": 5, "acse_timeout": 5, "dimse_timeout": 5}
    timeouts.update({k: float(v) for k, v in kw.items() if k.endswith("_timeout")})
    rest = {k: v for k, v in kw.items() if not k.endswith("_timeout")}
    options = ScuOptions(**timeouts, **rest)  # type: ignore[arg-type]
    with (
        pytest.raises(NetError) as info,
        open_association(
            host, port, ctx, options, propose([abstract]), mutual=bool(tls and tls.mutual)
        ),
    ):
        pass
    assert "\n" not in info.value.message
    return info.value


# -- refusals, each a typed error with its exit code ---------------------------------------


def test_closed_port_is_unreachable_60(pki_dir: Path) -> None:
    err = fails("127.0.0.1", free_port(), tls_options(pki_dir, "client"))
    assert isinstance(err, Unreachable) and err.exit_code == exitcodes.UNREACHABLE
    assert err.message.startswith("cannot reach 127.0.0.1:")
    assert "server running" in hint_for(err)


@pytest.mark.parametrize("profile", ["bcp195-ex", "bcp195-rfc8996"], ids=["tls1.2", "tls1.3"])
def test_client_from_an_untrusted_ca_is_63_with_the_reason(
    tdwii_server: TdwiiServer, serve_workdir: Path, other_ca_pki: Path, profile: str
) -> None:
    """Over TLS 1.2 the server judges our certificate inside the handshake: its alert always
    comes. Over TLS 1.3 it judges after our side is done; its alert races the reset of the
    connection (our A-ASSOCIATE-RQ is unread when it closes), and only the close may arrive."""
    tls = tls_options(other_ca_pki, "client", ca=serve_workdir / "certs" / PKI_CA, profile=profile)
    err = fails("localhost", tdwii_server.port, tls)
    assert isinstance(err, HandshakeFailed) and err.exit_code == exitcodes.TLS_HANDSHAKE
    assert err.message.startswith(f"TLS handshake with localhost:{tdwii_server.port} failed")
    if profile == "bcp195-ex":
        assert "our certificate is from a CA the peer does not trust" in err.message
    else:
        assert err.failure.cause in ("unknown-ca", "refused-our-certificate")
        assert (
            "our certificate is from a CA the peer does not trust" in err.message
            or "it did not accept our certificate" in err.message
        )


def test_server_from_an_untrusted_ca_is_63(tdwii_server: TdwiiServer, other_ca_pki: Path) -> None:
    err = fails("localhost", tdwii_server.port, tls_options(other_ca_pki, "client"))
    assert isinstance(err, HandshakeFailed) and err.exit_code == exitcodes.TLS_HANDSHAKE
    assert "untrusted CA" in err.message
    assert "--ca" in hint_for(err)  # the command line names the option to change


def test_no_client_certificate_is_63(tdwii_server: TdwiiServer, serve_workdir: Path) -> None:
    err = fails(
        "localhost", tdwii_server.port, tls_options(serve_workdir / "certs", "client", "tls")
    )
    assert isinstance(err, HandshakeFailed) and err.exit_code == exitcodes.TLS_HANDSHAKE
    assert "client certificate" in err.message
    assert "--mtls" in hint_for(err)


def test_plain_dicom_to_a_tls_port_is_62(tdwii_server: TdwiiServer) -> None:
    err = fails("127.0.0.1", tdwii_server.port, None)
    assert isinstance(err, ClosedBeforeAnswer) and err.exit_code == exitcodes.ASSOC_ABORTED
    assert "TLS" in hint_for(err)


@pytest.fixture(scope="module")
def picky_ae() -> Iterator[int]:
    """An in-process pynetdicom Verification SCP that insists on its own AE title."""
    from pynetdicom import AE

    ae = AE("PICKY")
    ae.require_called_aet = True
    ae.add_supported_context(VERIFICATION)
    server = ae.start_server(("127.0.0.1", 0), block=False)
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()


def test_rejected_is_61_in_the_standards_words(picky_ae: int) -> None:
    err = fails("127.0.0.1", picky_ae, None, called_aet="WRONG")
    assert isinstance(err, AssociationRejected) and err.exit_code == exitcodes.ASSOC_REJECTED
    assert err.message == (
        f"association rejected by WRONG@127.0.0.1:{picky_ae}: "
        "rejected (permanent): called AE title not recognised"
    )
    assert "-aec" in hint_for(err)


def test_no_context_accepted_is_61(picky_ae: int) -> None:
    err = fails("127.0.0.1", picky_ae, None, CT_STORAGE, called_aet="PICKY")
    assert isinstance(err, ContextRefused) and err.exit_code == exitcodes.ASSOC_REJECTED
    assert f"refused the {CT_STORAGE} context" in err.message


# -- a peer that lies about lengths ---------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        struct.pack(">BBL", 0x02, 0, 0xFFFFFFF0),  # an A-ASSOCIATE-AC "of 4 GB"
        struct.pack(">BBL", 0x09, 0, 12) + bytes(12),  # not a PDU type at all
        struct.pack(">BBL", 0x02, 0, 10) + bytes(10),  # an A-ASSOCIATE-AC too short to parse
    ],
    ids=["4-GB-length", "unknown-type", "truncated-ac"],
)
def test_a_peer_that_lies_is_a_protocol_violation_at_once(answer: bytes) -> None:
    peer = OneShotPeer(answer)  # and then it waits for us to hang up
    try:
        begin = time.monotonic()
        err = fails("127.0.0.1", peer.port, None)
        assert time.monotonic() - begin < 2  # refused on the header, not read or waited for
    finally:
        assert peer.done() is None
    assert isinstance(err, ProtocolViolation) and err.exit_code == exitcodes.ASSOC_ABORTED
    assert peer.closed_after is not None and peer.closed_after < 2


def test_an_ac_dripped_a_byte_at_a_time_ends_at_the_acse_deadline() -> None:
    rq = pdu.parse_associate_rq(pdu.associate_rq("TDWII", "ANY-SCP", propose([VERIFICATION]))[6:])
    ac = pdu.associate_ac(rq, [(1, 0, EXPLICIT_VR_LE)], 16382)
    peer = OneShotPeer(ac, read="pdu", drip=0.25)  # the whole AC would take over 40 s
    begin = time.monotonic()
    err = fails("127.0.0.1", peer.port, None, acse_timeout="1")
    took = time.monotonic() - begin
    assert isinstance(err, PeerTimeout) and err.exit_code == exitcodes.ASSOC_ABORTED
    assert took < 4  # the first byte within 1 s, then all of the PDU within 1 s: not per recv
    peer.done()


# -- the generic request path against tdwii serve ------------------------------------------


def _create(server: TdwiiServer, station: str, count: int) -> list[str]:
    """N-CREATE `count` workitems for `station` with the client; their UIDs."""
    tls = tls_options(server.workdir / "certs", "client")
    items = [
        (
            f"w{i}",
            build_workitem(
                patient_id=f"A-{i}", patient_name="Assoc^Test", label="Fx", station=station
            ),
        )
        for i in range(count)
    ]
    outcomes = prepare_datasets(items)
    send(outcomes, Peer("localhost", server.port, tls, OPTIONS))
    assert all(o.status == 0 for o in outcomes)
    return [o.sop_instance_uid for o in outcomes]


@pytest.fixture()
def assoc_ctx(tdwii_server: TdwiiServer):  # type: ignore[no-untyped-def]
    return build_client_context(tls_options(tdwii_server.workdir / "certs", "client"))


def _station_query(station: str) -> Dataset:
    """A UPS C-FIND identifier: the workitems of `station`, returning their UID."""
    query = Dataset()
    query.SOPInstanceUID = ""
    query.ScheduledStationNameCodeSequence = [Dataset()]
    query.ScheduledStationNameCodeSequence[0].CodeValue = station
    return query


def _c_find(assoc: Association, cx: AcceptedContext) -> Command:
    return Command(
        C_FIND_RQ,
        message_id=assoc.next_message_id(),
        sop_class=UPS_QUERY,
        priority=0,
        has_dataset=True,
    )


def test_c_find_yields_every_pending_response_then_success(
    tdwii_server: TdwiiServer, assoc_ctx
) -> None:  # type: ignore[no-untyped-def]
    uids = _create(tdwii_server, "ASSOC-FIND", 5)
    query = _station_query("ASSOC-FIND")
    with open_association(
        "localhost", tdwii_server.port, assoc_ctx, OPTIONS, propose([UPS_QUERY])
    ) as assoc:
        cx = assoc.context(UPS_QUERY, (EXPLICIT_VR_LE,))
        request = _c_find(assoc, cx)
        replies = list(assoc.request(request, codec.encode(query, cx.transfer_syntax), cx))
    statuses = [r.command.status for r in replies]
    assert statuses == [0xFF00] * 5 + [0x0000]
    found = {str(codec.decode(r.dataset, cx.transfer_syntax).SOPInstanceUID) for r in replies[:-1]}
    assert found == set(uids)
    assert replies[-1].dataset is None
    assert all(r.command.responding_to == request.message_id for r in replies)


def test_c_cancel_ends_a_streaming_c_find(tdwii_server: TdwiiServer, assoc_ctx) -> None:  # type: ignore[no-untyped-def]
    _create(tdwii_server, "ASSOC-CANCEL", 300)
    query = _station_query("ASSOC-CANCEL")
    start = len(tdwii_server.log_text())
    with open_association(
        "localhost", tdwii_server.port, assoc_ctx, OPTIONS, propose([UPS_QUERY])
    ) as assoc:
        cx = assoc.context(UPS_QUERY)
        request = _c_find(assoc, cx)
        statuses = []
        for reply in assoc.request(request, codec.encode(query, cx.transfer_syntax), cx):
            statuses.append(reply.command.status)
            if len(statuses) == 1:
                assoc.cancel(request, cx)
    # the cancel may race the last matches on a fast server; it must never be ignored long
    assert statuses[-1] in (0xFE00, 0x0000)
    assert statuses[-1] == 0xFE00 or len(statuses) == 301
    assert "C-CANCEL-RQ of id=1" in tdwii_server.wait_log("C-CANCEL", start)


def test_n_get_and_n_action_use_the_requested_uids(tdwii_server: TdwiiServer, assoc_ctx) -> None:  # type: ignore[no-untyped-def]
    (uid,) = _create(tdwii_server, "ASSOC-GET", 1)
    with open_association(
        "localhost", tdwii_server.port, assoc_ctx, OPTIONS, propose([UPS_PUSH, UPS_WATCH])
    ) as assoc:
        cx = assoc.context(UPS_PUSH)
        get = Command(
            N_GET_RQ,
            message_id=assoc.next_message_id(),
            sop_class=UPS_PUSH,
            sop_instance=uid,
            attribute_identifiers=(0x00741000, 0x00100020),
        )
        (reply,) = assoc.request(get, None, cx)
        assert reply.command.status == 0 and reply.command.sop_instance == uid
        got = codec.decode(reply.dataset or b"", cx.transfer_syntax)
        assert (got.ProcedureStepState, got.PatientID) == ("SCHEDULED", "A-0")
        info = Dataset()
        info.ReceivingAE = "NOBODY"  # not in the server's AE configuration
        watch = assoc.context(UPS_WATCH)
        subscribe = Command(
            N_ACTION_RQ,
            message_id=assoc.next_message_id(),
            sop_class=UPS_WATCH,
            sop_instance=uid,
            action_type=3,
            has_dataset=True,
        )
        (reply,) = assoc.request(subscribe, codec.encode(info, watch.transfer_syntax), watch)
        assert reply.command.status == 0xC308
        echo = Command(C_ECHO_RQ, message_id=assoc.next_message_id(), sop_class=VERIFICATION)
        with pytest.raises(ContextRefused):  # Verification was not proposed
            assoc.request(echo, None, assoc.context(VERIFICATION))
