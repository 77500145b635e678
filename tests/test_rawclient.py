"""`tdwii_cli.client.create.send` (the UPS Push SCU on `tdwii_cli.net`) against real peers.

The peers run in this process on 127.0.0.1 ephemeral ports: pynetdicom UPS Push
SCPs configured in ways `tdwii serve` never is (a 1 KB maximum PDU, Implicit VR
only, attribute lists in the N-CREATE-RSP, an abort in the middle of a run, mutual
TLS), and a hand-written DICOM peer (plain `socket`) that answers a request with
the wrong Message ID Being Responded To or the wrong command. Nothing is mocked.
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

from conftest import tls_options
from tdwii_cli import exitcodes
from tdwii_cli.client import create as creator
from tdwii_cli.client.dicomfiles import dataset_bytes, write_part10
from tdwii_cli.net.association import open_association, propose
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.tls.context import build_server_context
from tdwii_cli.tls.options import TlsOptions
from tdwii_cli.ups.workitem import build_workitem

UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
EXPLICIT = "1.2.840.10008.1.2.1"
IMPLICIT = "1.2.840.10008.1.2"
PLAIN = TlsOptions(role="client", mode="off")
# Short timeouts: a hung test fails in seconds, not in the default 30 s.
NET = ScuOptions(connect_timeout=5, acse_timeout=5, dimse_timeout=5)

Handler = Callable[[Any, Dataset], Any]


# -- peers ---------------------------------------------------------------------------------


class UpsScp:
    """A pynetdicom UPS Push SCP in this process.

    `received` holds, for each N-CREATE-RQ: the accepted transfer syntax, the
    attribute list's bytes as they arrived, the decoded data set, and the Message ID.
    `pdus` and `sent` hold every PDU the SCP read and wrote (raw bytes).
    `answer(event, dataset)` gives the handler's return value (default: success, nothing else).
    """

    def __init__(
        self,
        *,
        syntaxes: tuple[str, ...] = (EXPLICIT, IMPLICIT),
        max_pdu: int = 16382,
        answer: Handler | None = None,
        ssl_context: Any = None,
    ) -> None:
        self.received: list[dict[str, Any]] = []
        self.pdus: list[bytes] = []
        self.sent: list[bytes] = []
        self.peer_certs: list[dict[str, Any]] = []
        self.answer = answer or (lambda _event, _ds: (0x0000, None))
        ae = AE(ae_title="UPS-SCP")
        ae.maximum_pdu_size = max_pdu
        ae.network_timeout = 5
        ae.dimse_timeout = 5
        ae.acse_timeout = 5
        ae.add_supported_context(UPS_PUSH, list(syntaxes))
        self.ae = ae
        self.server = ae.start_server(
            ("127.0.0.1", 0),
            block=False,
            ssl_context=ssl_context,
            evt_handlers=[
                (evt.EVT_N_CREATE, self._on_create),
                (evt.EVT_DATA_RECV, self._on_data),
                (evt.EVT_DATA_SENT, self._on_sent),
            ],
        )
        self.port = int(self.server.server_address[1])

    def _on_data(self, event: Any) -> None:
        self.pdus.append(bytes(event.data))

    def _on_sent(self, event: Any) -> None:
        self.sent.append(bytes(event.data))

    def _on_create(self, event: Any) -> Any:
        raw = event.request.AttributeList.getvalue()
        ds = event.attribute_list
        sock = getattr(event.assoc.dul.socket, "socket", None)
        getpeercert = getattr(sock, "getpeercert", None)
        if getpeercert is not None:
            self.peer_certs.append(getpeercert())
        self.received.append(
            {
                "syntax": str(event.context.transfer_syntax),
                "raw": raw,
                "dataset": ds,
                "message_id": int(event.request.MessageID),
            }
        )
        return self.answer(event, ds)

    def peer(self, tls: TlsOptions = PLAIN) -> creator.Peer:
        return creator.Peer("127.0.0.1", self.port, tls, NET)

    def close(self) -> None:
        self.server.shutdown()
        self.ae.shutdown()


@pytest.fixture
def make_scp() -> Iterator[Callable[..., UpsScp]]:
    """A factory of `UpsScp`s, all shut down at the end of the test."""
    started: list[UpsScp] = []

    def make(**kw: Any) -> UpsScp:
        scp = UpsScp(**kw)
        started.append(scp)
        return scp

    try:
        yield make
    finally:
        for scp in started:
            scp.close()


def _pdu(pdu_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBL", pdu_type, 0, len(payload)) + payload


def _item(item_type: int, payload: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(payload)) + payload


def _elem(elem: int, value: bytes) -> bytes:
    return struct.pack("<HHL", 0x0000, elem, len(value)) + value


def _recv(conn: socket.socket, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = conn.recv(n - len(out))
        if not chunk:
            raise ConnectionError("closed")
        out += chunk
    return out


def _read_pdu(conn: socket.socket) -> tuple[int, bytes]:
    pdu_type, _, length = struct.unpack(">BBL", _recv(conn, 6))
    return pdu_type, _recv(conn, length)


class RawPeer:
    """A hand-written DICOM acceptor for one association.

    It accepts presentation context 1 with Explicit VR LE (refuses the others),
    reads one N-CREATE-RQ, and answers it with `response(message_id)` (a command
    set), or not at all when `response` is None. It records the PDU types it read
    afterwards (the client's A-ABORT).
    """

    def __init__(self, response: Callable[[int], bytes] | None) -> None:
        self.response = response
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(10)
        self.port = int(self.listener.getsockname()[1])
        self.contexts: list[int] = []
        self.message_ids: list[int] = []
        self.after: list[int] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            conn, _ = self.listener.accept()
        except OSError as exc:
            self.error = exc
            return
        with conn:
            conn.settimeout(10)
            try:
                self._serve(conn)
            except Exception as exc:  # recorded; the test asserts there was none
                self.error = exc

    def _serve(self, conn: socket.socket) -> None:
        pdu_type, rq = _read_pdu(conn)
        assert pdu_type == 0x01, pdu_type
        pos = 68  # protocol version, reserved, called, calling, 32 reserved bytes
        while pos + 4 <= len(rq):
            item_type, _, length = struct.unpack(">BBH", rq[pos : pos + 4])
            if item_type == 0x20:
                self.contexts.append(rq[pos + 4])
            pos += 4 + length
        items = _item(0x10, b"1.2.840.10008.3.1.1.1")
        for cid in self.contexts:
            result = 0 if cid == 1 else 4  # 4: transfer syntaxes not supported
            items += _item(
                0x21, struct.pack(">BBBB", cid, 0, result, 0) + _item(0x40, EXPLICIT.encode())
            )
        items += _item(0x50, _item(0x51, struct.pack(">L", 16384)))
        head = struct.pack(">HH", 1, 0) + rq[4:20] + rq[20:36] + bytes(32)
        conn.sendall(_pdu(0x02, head + items))

        command = b""
        while True:  # one N-CREATE-RQ: its command set, then its data set's last fragment
            pdu_type, payload = _read_pdu(conn)
            assert pdu_type == 0x04, pdu_type
            pos, done = 0, False
            while pos + 6 <= len(payload):
                (length,) = struct.unpack(">L", payload[pos : pos + 4])
                header = payload[pos + 5]
                if header & 0x01:
                    command += payload[pos + 6 : pos + 4 + length]
                elif header & 0x02:
                    done = True
                pos += 4 + length
            if done:
                break
        pos = 0
        while pos + 8 <= len(command):
            group, elem, length = struct.unpack("<HHL", command[pos : pos + 8])
            if (group, elem) == (0x0000, 0x0110):
                self.message_ids.append(struct.unpack("<H", command[pos + 8 : pos + 10])[0])
            pos += 8 + length
        if self.response is not None:
            rsp = self.response(self.message_ids[-1])
            conn.sendall(_pdu(0x04, struct.pack(">LBB", len(rsp) + 2, 1, 0x03) + rsp))
        try:
            while True:
                self.after.append(_read_pdu(conn)[0])
        except (OSError, ConnectionError, struct.error):
            pass

    def close(self) -> None:
        self.listener.close()
        self.thread.join(5)


def rsp_command(command_field: int, responding_to: int, status: int = 0) -> bytes:
    """An N-CREATE-RSP-like command set (Implicit VR LE) with no data set."""
    body = b"".join(
        [
            _elem(0x0002, UPS_PUSH.encode()),
            _elem(0x0100, struct.pack("<H", command_field)),
            _elem(0x0120, struct.pack("<H", responding_to)),
            _elem(0x0800, struct.pack("<H", 0x0101)),
            _elem(0x0900, struct.pack("<H", status)),
        ]
    )
    return _elem(0x0000, struct.pack("<L", len(body))) + body


# -- workitems -----------------------------------------------------------------------------


def make_workitem(folder: Path, name: str, *, big: bool = False, **kw: Any) -> Path:
    """A TDW-II workitem file in `folder`; `big` makes its data set well over 4 KB."""
    folder.mkdir(parents=True, exist_ok=True)
    fields: dict[str, Any] = {
        "patient_id": name,
        "patient_name": f"Raw^{name}",
        "label": f"Fx {name}",
        "station": "TrueBeam1",
        "plan_uid": pydicom.uid.generate_uid(),
    }
    fields.update(kw)
    if big:
        fields["comments"] = "Long comment for fragmentation. " * 300  # ~9.6 KB (LT)
    ds = build_workitem(**fields)
    if big:
        first = ds.InputInformationSequence[0]
        for _ in range(12):
            item = Dataset()
            item.TypeOfInstances = "DICOM"
            item.StudyInstanceUID = first.StudyInstanceUID
            item.SeriesInstanceUID = pydicom.uid.generate_uid()
            ref = Dataset()
            ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.481.2"
            ref.ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
            item.ReferencedSOPSequence = [ref]
            ds.InputInformationSequence.append(item)
    return write_part10(ds, folder / f"{name}.dcm")


def file_dataset(path: Path) -> Dataset:
    ds = pydicom.dcmread(path)
    del ds.file_meta
    return ds


def same(received: Dataset, path: Path) -> None:
    """`received` equals the file's data set, attribute for attribute."""
    assert received.to_json_dict() == file_dataset(path).to_json_dict()


# -- tests ---------------------------------------------------------------------------------


def test_large_workitem_is_fragmented_to_a_1k_pdu_peer(
    make_scp: Callable[..., UpsScp], tmp_path: Path
) -> None:
    scp = make_scp(max_pdu=1024)
    assert scp.ae.maximum_pdu_size == 1024  # pynetdicom took it (it offers it in the AC)
    with open_association(
        "127.0.0.1", scp.port, None, NET, propose([UPS_PUSH], (EXPLICIT,))
    ) as assoc:
        assert assoc.max_pdu == 1024  # the A-ASSOCIATE-AC says so
    path = make_workitem(tmp_path, "BIG-1", big=True)
    assert len(dataset_bytes(path.read_bytes()) or b"") > 8 * 1024

    outcomes = creator.prepare([path])
    assert creator.send(outcomes, scp.peer()) == 1
    assert outcomes[0].kind == creator.CREATED, outcomes[0]
    assert outcomes[0].status == 0x0000

    (got,) = scp.received
    same(got["dataset"], path)
    assert got["raw"] == dataset_bytes(path.read_bytes())
    p_data = [p for p in scp.pdus if p[0] == 0x04]
    assert len(p_data) > 8  # the data set really went in many PDUs
    lengths = [struct.unpack(">L", p[2:6])[0] for p in p_data]
    assert max(lengths) <= 1024, lengths  # never more than the peer's maximum
    assert max(lengths) > 900  # and the PDUs are filled, not dribbled


def test_implicit_only_peer_gets_a_re_encoded_data_set(
    make_scp: Callable[..., UpsScp], tmp_path: Path
) -> None:
    scp = make_scp(syntaxes=(IMPLICIT,))
    path = make_workitem(tmp_path, "IMPL-1", big=True)
    outcomes = creator.prepare([path])
    creator.send(outcomes, scp.peer())
    assert outcomes[0].kind == creator.CREATED, outcomes[0]

    (got,) = scp.received
    assert got["syntax"] == IMPLICIT
    assert got["raw"] != dataset_bytes(path.read_bytes())  # not the file's Explicit VR bytes
    same(got["dataset"], path)
    # ... and pydicom reads the bytes as Implicit VR LE to the same data set
    again = pydicom.dcmread(pydicom.filebase.DicomBytesIO(got["raw"]), force=True)
    assert again.original_encoding == (True, True)  # read as Implicit VR Little Endian
    assert again.to_json_dict() == file_dataset(path).to_json_dict()


def test_implicit_file_to_explicit_only_peer(
    make_scp: Callable[..., UpsScp], tmp_path: Path
) -> None:
    """The other way round: an Implicit VR file, non-ASCII UTF-8 names, re-encoded to Explicit."""
    scp = make_scp(syntaxes=(EXPLICIT,))
    source = make_workitem(tmp_path / "src", "UTF-1", patient_name="Müller^Zoë Åsa")
    ds = pydicom.dcmread(source)
    ds.file_meta.TransferSyntaxUID = IMPLICIT
    path = tmp_path / "implicit.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert pydicom.dcmread(path).original_encoding == (True, True)

    outcomes = creator.prepare([path])
    creator.send(outcomes, scp.peer())
    assert outcomes[0].kind == creator.CREATED, outcomes[0]
    (got,) = scp.received
    assert got["syntax"] == EXPLICIT
    assert str(got["dataset"].PatientName) == "Müller^Zoë Åsa"
    same(got["dataset"], path)


def test_explicit_vr_preferred_and_the_file_bytes_sent(
    make_scp: Callable[..., UpsScp], tmp_path: Path
) -> None:
    # The SCP lists Implicit first: the client still picks Explicit (its own context).
    scp = make_scp(syntaxes=(IMPLICIT, EXPLICIT))
    paths = [make_workitem(tmp_path, f"EXPL-{i}") for i in range(2)]
    outcomes = creator.prepare(paths)
    creator.send(outcomes, scp.peer())
    assert [o.kind for o in outcomes] == [creator.CREATED] * 2
    for got, path in zip(scp.received, paths, strict=True):
        assert got["syntax"] == EXPLICIT
        assert got["raw"] == dataset_bytes(path.read_bytes())
        same(got["dataset"], path)


def test_each_workitem_of_a_batch_gets_its_own_status(
    make_scp: Callable[..., UpsScp], tmp_path: Path
) -> None:
    plan = {  # PatientID -> (status, error comment or "", attribute list size in KB)
        "ST-0": (0x0000, "", 40),  # attribute list bigger than our 16 KB max PDU
        "ST-1": (0x0106, "bad value", 0),
        "ST-2": (0xB300, "", 1),
        "ST-3": (0xC301, "wrong state", 0),
        "ST-4": (0x0000, "", 1),
    }

    def answer(_event: Any, ds: Dataset) -> Any:
        code, comment, kbytes = plan[ds.PatientID]
        status = Dataset()
        status.Status = code
        if comment:
            status.ErrorComment = comment
        attributes = Dataset()
        attributes.PatientID = ds.PatientID
        attributes.SOPInstanceUID = ds.SOPInstanceUID
        attributes.TextValue = "x" * (kbytes * 1024)  # UT: no length limit
        return status, attributes

    scp = make_scp(answer=answer)
    paths = [make_workitem(tmp_path, pid) for pid in plan]
    outcomes = creator.prepare(paths)
    assert creator.send(outcomes, scp.peer()) == 1  # one association for the five

    assert [r["message_id"] for r in scp.received] == [1, 2, 3, 4, 5]
    assert [r["dataset"].PatientID for r in scp.received] == list(plan)
    for outcome, (pid, (code, comment, _kb)) in zip(outcomes, plan.items(), strict=True):
        assert outcome.source.endswith(f"{pid}.dcm")
        assert outcome.status == code, (pid, outcome)
        expected = creator.FAILED if code in (0x0106, 0xC301) else creator.CREATED
        assert outcome.kind == expected, (pid, outcome)
        if comment:
            assert comment in outcome.detail
    assert creator.exit_code(outcomes) == exitcodes.PARTIAL
    # The responses really carried attribute lists (pynetdicom sends them with success and
    # warning statuses), the first one in several P-DATA-TF PDUs.
    data_pdvs = [p for p in scp.sent if p[0] == 0x04 and not p[11] & 0x01]
    assert len(data_pdvs) >= 3 + 2


@pytest.mark.parametrize("code", [0x0107, 0x0116], ids=["0x0107", "0x0116"])
def test_general_warning_statuses_count_as_created(
    code: int, make_scp: Callable[..., UpsScp], tmp_path: Path
) -> None:
    scp = make_scp(answer=lambda _event, _ds: (code, None))
    outcomes = creator.prepare([make_workitem(tmp_path, f"W-{code:04X}")])
    creator.send(outcomes, scp.peer())
    assert len(scp.received) == 1
    assert outcomes[0].status == code
    assert outcomes[0].detail.startswith("Warning")  # tdwii's own words for it
    assert outcomes[0].kind == creator.CREATED, outcomes[0]
    assert creator.exit_code(outcomes) == exitcodes.OK


def test_abort_part_way_marks_the_rest_not_sent(
    make_scp: Callable[..., UpsScp], tmp_path: Path
) -> None:
    def answer(event: Any, _ds: Dataset) -> Any:
        if event.request.MessageID == 2:
            event.assoc.abort()
        return 0x0000, None

    scp = make_scp(answer=answer)
    paths = [make_workitem(tmp_path, f"AB-{i}") for i in range(4)]
    outcomes = creator.prepare(paths)
    with pytest.raises(creator.SendInterrupted) as info:
        creator.send(outcomes, scp.peer())
    exc = info.value
    assert exc.exit_code == exitcodes.ASSOC_ABORTED == 62
    assert exc.associations == 1
    assert "\n" not in exc.message and exc.message.startswith(f"127.0.0.1:{scp.port}")
    assert [o.kind for o in outcomes] == [creator.CREATED] + [creator.NOT_SENT] * 3
    assert all(o.detail == exc.message for o in outcomes[1:])
    assert len(scp.received) == 2  # the third request never went out
    assert creator.exit_code(outcomes) == exitcodes.PARTIAL


@pytest.mark.parametrize(
    ("response", "words"),
    [
        (lambda mid: rsp_command(0x8140, mid + 7), "answers message 8, not 1"),
        (lambda mid: rsp_command(0x8030, mid), "got Command Field 0x8030"),
    ],
    ids=["wrong-message-id", "c-echo-rsp"],
)
def test_a_wrong_response_ends_the_run_with_62(
    response: Callable[[int], bytes], words: str, tmp_path: Path
) -> None:
    peer = RawPeer(response)
    try:
        paths = [make_workitem(tmp_path, f"WR-{i}") for i in range(3)]
        outcomes = creator.prepare(paths)
        with pytest.raises(creator.SendInterrupted) as info:
            creator.send(outcomes, creator.Peer("127.0.0.1", peer.port, PLAIN, NET))
    finally:
        peer.close()
    assert peer.error is None, peer.error
    assert peer.contexts == [1, 3]  # Explicit and Implicit VR LE, a context each
    assert peer.message_ids == [1]
    exc = info.value
    assert exc.exit_code == 62
    assert words in exc.message and "\n" not in exc.message
    assert [o.kind for o in outcomes] == [creator.NOT_SENT] * 3
    assert peer.after[:1] == [0x07]  # the client told the peer: A-ABORT, not a release


def test_no_answer_times_out_with_62_and_aborts(tmp_path: Path) -> None:
    peer = RawPeer(None)
    net = ScuOptions(connect_timeout=5, acse_timeout=5, dimse_timeout=0.5)
    try:
        outcomes = creator.prepare([make_workitem(tmp_path, "SILENT")])
        with pytest.raises(creator.SendInterrupted) as info:
            creator.send(outcomes, creator.Peer("127.0.0.1", peer.port, PLAIN, net))
    finally:
        peer.close()
    assert info.value.exit_code == 62
    assert "did not answer in time" in info.value.message
    assert outcomes[0].kind == creator.NOT_SENT
    assert peer.message_ids == [1]
    assert peer.after[:1] == [0x07]


def test_scp_assigns_the_sop_instance_uid(make_scp: Callable[..., UpsScp], tmp_path: Path) -> None:
    """No SOP Instance UID in the file: none in the request, the one the SCP gives is kept."""

    def answer(event: Any, _ds: Dataset) -> Any:
        assert event.request.AffectedSOPInstanceUID is None
        attributes = Dataset()
        attributes.AffectedSOPInstanceUID = "1.2.826.0.1.3680043.8.498.4242"
        return 0x0000, attributes

    scp = make_scp(answer=answer)
    ds = pydicom.dcmread(make_workitem(tmp_path / "src", "NOUID"))
    del ds.SOPInstanceUID
    path = tmp_path / "nouid.dcm"
    ds.save_as(path, enforce_file_format=True)
    outcomes = creator.prepare([path], check=False)
    creator.send(outcomes, scp.peer())
    assert outcomes[0].kind == creator.CREATED, outcomes[0]
    assert outcomes[0].sop_instance_uid == "1.2.826.0.1.3680043.8.498.4242"
    assert "SOPInstanceUID" not in scp.received[0]["dataset"]


def test_mutual_tls_peer_with_small_pdu(
    make_scp: Callable[..., UpsScp], pki_dir: Path, tmp_path: Path
) -> None:
    server_ctx = build_server_context(tls_options(pki_dir, "server"))
    scp = make_scp(ssl_context=server_ctx, max_pdu=4096)
    client = tls_options(pki_dir, "client")
    paths = [make_workitem(tmp_path, "TLS-0", big=True), make_workitem(tmp_path, "TLS-1")]
    outcomes = creator.prepare(paths)
    assert creator.send(outcomes, scp.peer(client)) == 1
    assert [o.kind for o in outcomes] == [creator.CREATED] * 2
    for got, path in zip(scp.received, paths, strict=True):
        same(got["dataset"], path)
    subject = dict(pair for rdn in scp.peer_certs[0]["subject"] for pair in rdn)
    assert subject["commonName"] == "workitemcreator"  # the SCP saw our certificate


def test_cli_sends_a_folder_of_three(make_scp: Callable[..., UpsScp], tmp_path: Path) -> None:
    scp = make_scp()
    folder = tmp_path / "three"
    paths = [make_workitem(folder, f"CLI-{i}") for i in range(3)]
    result = subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "create-workitem", "127.0.0.1", str(scp.port),
         str(folder), "--json", "-aec", "UPS-SCP"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    doc = json.loads(result.stdout)
    assert doc["created"] == 3
    assert doc["associations"] == 1
    uids = {pydicom.dcmread(p).SOPInstanceUID for p in paths}
    assert {r["sop_instance_uid"] for r in doc["results"]} == uids
    assert {r["dataset"].SOPInstanceUID for r in scp.received} == uids
