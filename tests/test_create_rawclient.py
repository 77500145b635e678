"""The raw-socket N-CREATE client (`creator.send` over `rawassoc`/`dulraw`) against real peers.

Peers are pynetdicom UPS Push SCPs started in this process on loopback ports with
settings `tdwii serve` does not have (a small maximum PDU, Implicit VR only,
answers with attribute lists, an abort mid-run), plus a hand-written server
that answers with the wrong message ID. Plain TCP except where TLS is the point.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, evt

from tdwii_cli import creator, dulraw, exitcodes
from tdwii_cli.dicomfiles import dataset_bytes
from tdwii_cli.scuoptions import ScuOptions
from tdwii_cli.tlsoptions import TlsOptions
from tdwii_cli.workitem import build_workitem, write_part10

UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"


class Scp:
    """A pynetdicom UPS Push SCP; `received` holds what each N-CREATE brought."""

    def __init__(
        self,
        syntaxes: list[str],
        answer: Callable[[Any, Dataset], tuple[int, Dataset | None]] | None = None,
        max_pdu: int = 16382,
    ) -> None:
        self.received: list[dict[str, Any]] = []
        self.answer = answer or (lambda _event, _ds: (0x0000, None))
        ae = AE("RAWSCP")
        ae.add_supported_context(UPS_PUSH, syntaxes)
        ae.maximum_pdu_size = max_pdu
        self.server = ae.start_server(
            ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_N_CREATE, self._on_create)]
        )
        self.port = int(self.server.server_address[1])

    def _on_create(self, event: Any) -> tuple[int, Dataset | None]:
        ds = event.attribute_list
        self.received.append(
            {
                "syntax": str(event.context.transfer_syntax),
                "bytes": event.request.AttributeList.getvalue(),
                "dataset": ds,
                "uid": str(event.request.AffectedSOPInstanceUID),
            }
        )
        return self.answer(event, ds)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def scps() -> Iterator[list[Scp]]:
    made: list[Scp] = []
    try:
        yield made
    finally:
        for scp in made:
            scp.close()


def _workitem(folder: Path, name: str, **extra: Any) -> Path:
    ds = build_workitem(patient_id=name, patient_name=f"Raw^{name}", label=f"Fx {name}")
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    folder.mkdir(parents=True, exist_ok=True)
    return write_part10(ds, folder / f"{name}.dcm")


def _peer(port: int, **net: Any) -> creator.Peer:
    return creator.Peer("127.0.0.1", port, TlsOptions(role="client"), ScuOptions(**net))


def _same(a: Dataset, b: Dataset) -> bool:
    return a.to_json_dict() == b.to_json_dict()


def test_a_large_workitem_reaches_a_small_pdu_peer_intact(scps: list[Scp], tmp_path: Path) -> None:
    scp = Scp([EXPLICIT, IMPLICIT], max_pdu=1024)
    scps.append(scp)
    path = _workitem(tmp_path, "BIG", CommentsOnTheScheduledProcedureStep="x" * 6000)
    assert len(dataset_bytes(path.read_bytes()) or b"") > 6000
    outcomes = creator.prepare([path])
    assert creator.send(outcomes, _peer(scp.port)) == 1
    assert outcomes[0].kind == creator.CREATED and outcomes[0].status == 0
    (got,) = scp.received
    assert _same(got["dataset"], pydicom.dcmread(path))


def test_an_implicit_vr_only_peer_gets_the_data_set_re_encoded(
    scps: list[Scp], tmp_path: Path
) -> None:
    scp = Scp([IMPLICIT])
    scps.append(scp)
    path = _workitem(tmp_path, "IMPL")
    outcomes = creator.prepare([path])
    creator.send(outcomes, _peer(scp.port))
    assert outcomes[0].kind == creator.CREATED
    (got,) = scp.received
    assert got["syntax"] == IMPLICIT
    assert got["bytes"] != dataset_bytes(path.read_bytes())  # re-encoded, not the file's bytes
    assert _same(got["dataset"], pydicom.dcmread(path))


def test_explicit_vr_is_chosen_and_the_files_bytes_go_out_unchanged(
    scps: list[Scp], tmp_path: Path
) -> None:
    scp = Scp([IMPLICIT, EXPLICIT])  # pynetdicom alone would pick Implicit VR first
    scps.append(scp)
    path = _workitem(tmp_path, "EXPL")
    outcomes = creator.prepare([path])
    creator.send(outcomes, _peer(scp.port))
    (got,) = scp.received
    assert got["syntax"] == EXPLICIT
    assert got["bytes"] == dataset_bytes(path.read_bytes())
    assert got["uid"] == pydicom.dcmread(path).SOPInstanceUID


def test_each_response_goes_to_its_own_workitem(scps: list[Scp], tmp_path: Path) -> None:
    def answer(_event: Any, ds: Dataset) -> tuple[int, Dataset | None]:
        reply = Dataset()
        reply.PatientID = ds.PatientID  # an attribute list in the N-CREATE-RSP
        return (0x0106 if ds.PatientID in ("P1", "P3") else 0x0000), reply

    scp = Scp([EXPLICIT], answer=answer)
    scps.append(scp)
    for i in range(5):
        _workitem(tmp_path / "five", f"P{i}")
    outcomes = creator.prepare([tmp_path / "five"])
    assert creator.send(outcomes, _peer(scp.port)) == 1
    got = {o.dataset.PatientID: (o.kind, o.status) for o in outcomes}  # type: ignore[union-attr]
    assert got == {
        "P0": (creator.CREATED, 0x0000),
        "P1": (creator.FAILED, 0x0106),
        "P2": (creator.CREATED, 0x0000),
        "P3": (creator.FAILED, 0x0106),
        "P4": (creator.CREATED, 0x0000),
    }
    assert creator.exit_code(outcomes) == exitcodes.PARTIAL


def test_an_abort_mid_run_marks_the_rest_not_sent(scps: list[Scp], tmp_path: Path) -> None:
    def answer(event: Any, _ds: Dataset) -> tuple[int, Dataset | None]:
        if len(scp.received) == 2:
            event.assoc.abort()
        return 0x0000, None

    scp = Scp([EXPLICIT], answer=answer)
    scps.append(scp)
    for i in range(4):
        _workitem(tmp_path / "four", f"A{i}")
    outcomes = creator.prepare([tmp_path / "four"])
    with pytest.raises(creator.SendInterrupted) as caught:
        creator.send(outcomes, _peer(scp.port))
    assert caught.value.exit_code == exitcodes.ASSOC_ABORTED
    assert "\n" not in caught.value.message
    assert [o.kind for o in outcomes] == [creator.CREATED] + [creator.NOT_SENT] * 3


class RawServer:
    """A hand-written acceptor for one association (context 1, Explicit VR LE, our `max_pdu`):
    records every P-DATA-TF PDU length and answers the first N-CREATE with `command_field`
    for message ID + `id_offset` and status 0000 (then more N-CREATEs correctly)."""

    def __init__(
        self, command_field: int = dulraw.N_CREATE_RSP, id_offset: int = 0, max_pdu: int = 16384
    ) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.command_field = command_field
        self.id_offset = id_offset
        self.max_pdu = max_pdu
        self.pdata_lengths: list[int] = []
        self.datasets: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _read_pdu(self, conn: socket.socket) -> tuple[int, bytes]:
        pdu_type, payload = dulraw.read_pdu(conn)
        if pdu_type == 0x04:
            self.pdata_lengths.append(len(payload))
        return pdu_type, payload

    def _serve(self) -> None:
        conn, _ = self.listener.accept()
        with conn:
            self._read_pdu(conn)  # A-ASSOCIATE-RQ
            syntax = dulraw._item(0x40, EXPLICIT.encode())
            context = dulraw._item(0x21, bytes([1, 0, 0, 0]) + syntax)
            user = dulraw._item(0x50, dulraw._item(0x51, struct.pack(">L", self.max_pdu)))
            head = struct.pack(">HH", 1, 0) + b"RAWSCP".ljust(16) + b"TDWII".ljust(16)
            app = dulraw._item(0x10, dulraw.APPLICATION_CONTEXT)
            conn.sendall(dulraw._pdu(0x02, head + bytes(32) + app + context + user))
            field, offset = self.command_field, self.id_offset
            try:
                while True:
                    command, data = self._read_message(conn)
                    self.datasets.append(data)
                    (message_id,) = struct.unpack("<H", command[(0x0000, 0x0110)])
                    rsp = dulraw.command_set(
                        [
                            (0x0002, dulraw._uid(UPS_PUSH)),
                            (0x0100, struct.pack("<H", field)),
                            (0x0120, struct.pack("<H", message_id + offset)),
                            (0x0800, struct.pack("<H", dulraw.NO_DATASET)),
                            (0x0900, struct.pack("<H", 0x0000)),
                        ]
                    )
                    conn.sendall(dulraw.p_data(1, rsp, None, 0))
                    field, offset = dulraw.N_CREATE_RSP, 0
            except (OSError, dulraw.Aborted, dulraw.ProtocolError):
                return  # released, aborted or hung up

    def _read_message(self, conn: socket.socket) -> tuple[dict[tuple[int, int], bytes], bytes]:
        command, data = b"", b""
        while True:
            pdu_type, payload = self._read_pdu(conn)
            if pdu_type == 0x05:  # A-RELEASE-RQ
                conn.sendall(dulraw.RELEASE_RP)
                raise dulraw.Aborted("released")
            if pdu_type != 0x04:
                raise dulraw.Aborted(f"PDU 0x{pdu_type:02X}")
            header, fragment = payload[5], payload[6:]
            if header & 0x01:
                command += fragment
            else:
                data += fragment
                if header & 0x02:
                    return dulraw.command_elements(command), data

    def close(self) -> None:
        self.listener.close()


def test_p_data_tf_pdus_never_exceed_the_peers_maximum(tmp_path: Path) -> None:
    server = RawServer(max_pdu=1024)
    try:
        path = _workitem(tmp_path, "FRAG", CommentsOnTheScheduledProcedureStep="y" * 5000)
        outcomes = creator.prepare([path])
        creator.send(outcomes, _peer(server.port))
        assert outcomes[0].kind == creator.CREATED
        server.thread.join(5)
        assert server.datasets == [dataset_bytes(path.read_bytes())]
        assert len(server.pdata_lengths) >= 6  # 5 KB in PDUs of at most 1 KB
        assert max(server.pdata_lengths) <= 1024
    finally:
        server.close()


@pytest.mark.parametrize(
    ("field", "offset", "words"),
    [(dulraw.N_CREATE_RSP, 1, "answers message"), (0x8130, 0, "expected a response 0x8140")],
    ids=["wrong message id", "not an N-CREATE-RSP"],
)
def test_a_wrong_response_aborts_with_62(
    tmp_path: Path, field: int, offset: int, words: str
) -> None:
    server = RawServer(field, offset)
    try:
        for i in range(2):
            _workitem(tmp_path / "two", f"W{i}")
        outcomes = creator.prepare([tmp_path / "two"])
        with pytest.raises(creator.SendInterrupted) as caught:
            creator.send(outcomes, _peer(server.port))
        assert caught.value.exit_code == exitcodes.ASSOC_ABORTED
        assert words in caught.value.message
        assert [o.kind for o in outcomes] == [creator.NOT_SENT, creator.NOT_SENT]
    finally:
        server.close()


def test_dimse_timeout_when_the_peer_never_answers(scps: list[Scp], tmp_path: Path) -> None:
    gate = threading.Event()

    def answer(_event: Any, _ds: Dataset) -> tuple[int, Dataset | None]:
        gate.wait(5)  # longer than the client's -td
        return 0x0000, None

    scp = Scp([EXPLICIT], answer=answer)
    scps.append(scp)
    outcomes = creator.prepare([_workitem(tmp_path, "SLOW")])
    try:
        with pytest.raises(creator.SendInterrupted) as caught:
            creator.send(outcomes, _peer(scp.port, dimse_timeout=0.5))
        assert caught.value.exit_code == exitcodes.ASSOC_ABORTED
        assert "did not answer in time" in caught.value.message
    finally:
        gate.set()


def test_cli_folder_against_a_plain_peer(scps: list[Scp], tmp_path: Path) -> None:
    scp = Scp([EXPLICIT, IMPLICIT])
    scps.append(scp)
    for i in range(3):
        _workitem(tmp_path / "cli", f"C{i}")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tdwii_cli",
            "create-workitem",
            "127.0.0.1",
            str(scp.port),
            str(tmp_path / "cli"),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["created"] == 3 and doc["associations"] == 1
    assert sorted(str(got["dataset"].PatientID) for got in scp.received) == ["C0", "C1", "C2"]
