"""Foreign SCUs against a real `tdwii serve --mtls` (a subprocess, the test PKI made by
`tdwii pki init`, real TLS):

- dcmjs-dimse (npm, JavaScript, pinned in tests/js/package.json and installed there by
  `.ci/run` with `npm ci`) runs tests/js/ups_tls_client.js under Node, with TLS pinned to 1.2,
  then to 1.3: one association per step (C-ECHO, N-CREATE, C-FIND on UPS Pull, N-GET, N-ACTION
  claim, N-SET with the Transaction UID, N-GET, then 30 C-ECHO associations in a row). Every
  status as expected, every association on the version forced (its socket says so, and the
  server's log), and every association closed cleanly: no socket error after the
  A-RELEASE-RP (the requestor closes the transport; the acceptor waits for it, PS3.8 Sta13).
- No data set flag without a data set: from bytes, the response to each request with an empty
  data set says "no data set" (Command Data Set Type 0x0101) and has none (a C-FIND pending
  response keeps its identifier); over the wire, pynetdicom sees N-CREATE, N-SET and N-ACTION
  responses, successes and failures, with 0x0101 and no data set PDV, and an N-GET response
  with its attributes, or none when there is nothing to return.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt

from conftest import PKI_CA, PKI_CLIENT, TdwiiServer, require_tool, start_tdwii_server, wait_until
from tdwii_cli.client.dicomfiles import write_part10
from tdwii_cli.dicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from tdwii_cli.net import dimse
from tdwii_cli.scp import replies
from tdwii_cli.scp.messages import Reply, Request
from tdwii_cli.ups.workitem import build_workitem
from upsops import DAY, UPS_PULL, UPS_PUSH, tdd

JS = Path(__file__).parent / "js"
CLIENT = JS / "ups_tls_client.js"
ECHOES = 30  # C-ECHO associations in a row after the UPS steps
NO_DATASET = 0x0101
PENDING, SUCCESS = 0xFF00, 0x0000


def pinned_dcmjs_dimse() -> str:
    """The dcmjs-dimse version tests/js/package.json pins."""
    return str(json.loads((JS / "package.json").read_text())["dependencies"]["dcmjs-dimse"])


def require_dcmjs_dimse() -> str:
    """The `node` to run the client with, once dcmjs-dimse is installed in tests/js; skip
    (CI unset) or fail (CI set) when either is missing."""
    node = require_tool("node", "nodejs npm")
    if not (JS / "node_modules" / "dcmjs-dimse" / "package.json").is_file():
        message = f"dcmjs-dimse not installed in {JS} (npm ci --prefix tests/js)"
        if os.environ.get("CI"):
            pytest.fail(f"CI: required tool {message}")
        pytest.skip(message)
    return node


@pytest.fixture(scope="module")
def server(serve_workdir: Path) -> Iterator[TdwiiServer]:
    """`tdwii serve --mtls` at -v (its log names each handshake's TLS version)."""
    running = start_tdwii_server(serve_workdir, log_name="foreign")
    try:
        yield running
    finally:
        running.stop()


# -- dcmjs-dimse ------------------------------------------------------------------------


@dataclass
class DcmjsRun:
    tls: str  # the version forced: TLSv1.2 or TLSv1.3
    plan: dict[str, Any] = field(repr=False)
    output: dict[str, Any] = field(repr=False)  # what the script printed
    log: str = field(repr=False)  # the server's log while it ran

    @property
    def associations(self) -> list[dict[str, Any]]:
        return list(self.output["associations"])

    def steps(self, name: str) -> list[dict[str, Any]]:
        return [a for a in self.associations if a["name"] == name]


@pytest.fixture(scope="module", params=["TLSv1.2", "TLSv1.3"])
def dcmjs_run(
    request: pytest.FixtureRequest, server: TdwiiServer, tmp_path_factory: pytest.TempPathFactory
) -> DcmjsRun:
    """tests/js/ups_tls_client.js run once against `server` with TLS pinned to one version."""
    node = require_dcmjs_dimse()
    tls = str(request.param)
    folder = tmp_path_factory.mktemp(f"dcmjs-{tls}")
    patient = f"DCMJS-{tls}"
    ds = build_workitem(
        patient_id=patient, patient_name="Node^Jay", label="Fx 1", station="TB1", scheduled=DAY
    )
    write_part10(ds, folder / "workitem.dcm")
    certs = server.workdir / "certs"
    plan = {
        "host": server.host,
        "port": server.port,
        "calling": "DCMJS",
        "called": "UPSSCP",
        "tls": tls,
        "ca": str(certs / PKI_CA),
        "cert": f"{certs / PKI_CLIENT}.pem",
        "key": f"{certs / PKI_CLIENT}.key",
        "workitem": str(folder / "workitem.dcm"),
        "uid": str(ds.SOPInstanceUID),
        "txn": generate_uid(prefix="2.25."),
        "patient_id": patient,
        "echoes": ECHOES,
        "timeout_ms": 10000,
    }
    (folder / "plan.json").write_text(json.dumps(plan))
    start = len(server.log_text())
    proc = subprocess.run(
        [node, str(CLIENT), str(folder / "plan.json")],
        cwd=JS,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr
    output = json.loads(proc.stdout)
    count = len(output["associations"])

    def all_logged() -> str:  # the server logs a release after the client may have closed
        text = server.log_text()[start:]
        ended = text.count("association released") + text.count("without release")
        return text if ended >= count else ""

    try:
        log = wait_until(all_logged, 5, f"{count} associations ended in the server log")
    except AssertionError:
        log = server.log_text()[start:]
    return DcmjsRun(tls, plan, output, log)


def test_dcmjs_dimse_runs_the_ups_operations(dcmjs_run: DcmjsRun) -> None:
    run, uid = dcmjs_run, dcmjs_run.plan["uid"]
    assert run.output["version"] == pinned_dcmjs_dimse()
    names = [a["name"] for a in run.associations]
    ups = ["C-ECHO", "N-CREATE", "C-FIND", "N-GET", "N-ACTION", "N-SET", "N-GET"]
    assert names == ups + ["C-ECHO"] * ECHOES
    for association in run.associations:
        assert association["events"][0] == "accepted", association

    def only(name: str, index: int = 0) -> dict[str, Any]:
        responses = run.steps(name)[index]["responses"]
        assert len(responses) == 1, responses
        return dict(responses[0])

    for echo in run.steps("C-ECHO"):
        assert [r["status"] for r in echo["responses"]] == [SUCCESS], echo
    for name in ("N-CREATE", "N-ACTION", "N-SET"):  # no data set with the status
        assert only(name) == {
            "status": SUCCESS,
            "has_dataset": False,
            "dataset": None,
            "error_comment": "",
        }, name
    pending, final = run.steps("C-FIND")[0]["responses"]
    assert pending["status"] == PENDING and pending["has_dataset"]
    assert pending["dataset"]["SOPInstanceUID"] == uid
    assert pending["dataset"]["PatientID"] == run.plan["patient_id"]
    assert pending["dataset"]["ProcedureStepLabel"] == "Fx 1"
    assert final["status"] == SUCCESS and not final["has_dataset"]
    for index, state in enumerate(("SCHEDULED", "IN PROGRESS")):  # before and after the claim
        got = only("N-GET", index)
        assert got["status"] == SUCCESS and got["has_dataset"], got
        assert got["dataset"]["ProcedureStepState"] == state
    assert f"created workitem {uid}" in run.log
    assert f"workitem {uid} is IN PROGRESS (by DCMJS)" in run.log
    assert f"N-SET {uid} from DCMJS: 1 attribute(s) updated" in run.log


def test_dcmjs_dimse_negotiates_the_tls_version_it_forces(dcmjs_run: DcmjsRun) -> None:
    run = dcmjs_run
    assert {a["tls"] for a in run.associations} == {run.tls}
    handshakes = run.log.count("TLS handshake ok, ")
    assert handshakes == len(run.associations), run.log[-3000:]
    assert run.log.count(f"TLS handshake ok, {run.tls} ") == handshakes


def test_dcmjs_dimse_associations_end_without_an_error(dcmjs_run: DcmjsRun) -> None:
    """Each association: accepted, released, closed; no socket error, A-ABORT or timeout
    anywhere, and in particular none after the A-RELEASE-RP (dcmjs-dimse reported
    `read ECONNRESET` there when the server closed before it had)."""
    run = dcmjs_run
    for association in run.associations:
        events = association["events"]
        assert "released" in events and events[-1] == "closed", association
        before = events[: events.index("released")]
        assert not [e for e in before if e.startswith(("error", "aborted", "timeout"))], events
    assert "WARNING" not in run.log and "ERROR" not in run.log, run.log[-3000:]
    reset = [a for a in run.associations if a["errors_after_release"]]
    if reset:
        words = sorted({e for a in reset for e in a["errors_after_release"]})
        steps = ", ".join(f"{n} {name}" for name, n in Counter(a["name"] for a in reset).items())
        pytest.fail(
            f"{len(reset)} of {len(run.associations)} {run.tls} associations saw an error "
            f"after a completed A-RELEASE ({steps}): {words}"
        )


# -- no data set flag without a data set ------------------------------------------------------


@pytest.mark.parametrize("syntax", [EXPLICIT_VR_LE, IMPLICIT_VR_LE], ids=["explicit", "implicit"])
def test_an_empty_data_set_is_no_data_set(syntax: str) -> None:
    """From bytes: the response to each request, with an empty data set, a data set, or
    none; only a C-FIND pending response keeps an empty identifier."""

    def answer(request: int, reply: Reply) -> tuple[bool, bytes | None]:
        command = dimse.Command(request, message_id=7, sop_class=UPS_PULL, sop_instance="1.2.3")
        response, data = replies.response(Request(command, None, syntax, "SCU"), reply)
        dimse.encode_message(1, response, data, 16384)  # flag and data set agree
        return response.has_dataset, data

    state = Dataset()
    state.ProcedureStepState = "SCHEDULED"
    for request in (dimse.N_CREATE_RQ, dimse.N_SET_RQ, dimse.N_ACTION_RQ, dimse.N_GET_RQ):
        assert answer(request, Reply(SUCCESS)) == (False, None)
        assert answer(request, Reply(SUCCESS, dataset=Dataset())) == (False, None)
        assert answer(request, Reply(SUCCESS, data=b"")) == (False, None)
        assert answer(request, Reply(0xC307, "no such UPS", dataset=Dataset())) == (False, None)
    has_dataset, data = answer(dimse.N_GET_RQ, Reply(SUCCESS, dataset=state))
    assert has_dataset and data and b"SCHEDULED" in data
    assert answer(dimse.C_FIND_RQ, Reply(PENDING, dataset=Dataset())) == (True, b"")
    assert answer(dimse.C_FIND_RQ, Reply(SUCCESS, dataset=Dataset())) == (False, None)
    has_dataset, data = answer(dimse.C_FIND_RQ, Reply(PENDING, dataset=state))
    assert has_dataset and data and b"SCHEDULED" in data


def test_n_create_n_set_n_action_responses_carry_no_data_set(server: TdwiiServer) -> None:
    """pynetdicom as the delivery device; every P-DATA-TF it receives is recorded, so a data
    set PDV is seen even when it is empty."""
    pdvs: list[tuple[bool, int]] = []  # (is a command fragment, length) of each PDV received

    def on_pdu(event: Any) -> None:
        for item in getattr(event.pdu, "presentation_data_value_items", []):
            value = item.presentation_data_value
            pdvs.append((bool(value[0] & 0x01), len(value) - 1))

    def received() -> list[tuple[bool, int]]:
        out = list(pdvs)
        pdvs.clear()
        return out

    ds = build_workitem(
        patient_id="FLAG-1", patient_name="Flag^Test", label="Fx 1", station="TB1", scheduled=DAY
    )
    del ds.SpecificCharacterSet  # so that an N-GET can find nothing it may return
    uid, txn = str(ds.SOPInstanceUID), generate_uid(prefix="2.25.")
    claim = Dataset()
    claim.ProcedureStepState, claim.TransactionUID = "IN PROGRESS", txn
    progress = Dataset()
    progress.TransactionUID = txn
    progress.ProcedureStepLabel = "Fx 1 (moved)"
    wrong = Dataset()
    wrong.TransactionUID = generate_uid(prefix="2.25.")
    wrong.ProcedureStepLabel = "not mine"

    with tdd(server, "FLAGTDD") as assoc:
        assoc.bind(evt.EVT_PDU_RECV, on_pdu)
        sends = [
            ("N-CREATE", lambda: assoc.send_n_create(ds, UPS_PUSH, uid), SUCCESS),
            ("N-CREATE again", lambda: assoc.send_n_create(ds, UPS_PUSH, uid), 0x0111),
            ("claim", lambda: assoc.send_n_action(claim, 1, UPS_PULL, uid), SUCCESS),
            ("claim again", lambda: assoc.send_n_action(claim, 1, UPS_PULL, uid), 0xC302),
            ("N-SET", lambda: assoc.send_n_set(progress, UPS_PULL, uid), SUCCESS),
            ("N-SET, wrong UID", lambda: assoc.send_n_set(wrong, UPS_PULL, uid), 0xC301),
        ]
        for what, send, expected in sends:
            assoc.responses.clear()
            # pynetdicom's own answer (an empty Dataset on success either way) cannot tell
            status, _ = send()
            assert status.Status == expected, (what, status)
            (message,) = assoc.responses
            assert message.command_set.CommandDataSetType == NO_DATASET, what
            assert [is_command for is_command, _ in received()] == [True], what

        status, got = assoc.send_n_get([0x00741000], UPS_PULL, uid)  # Procedure Step State
        assert status.Status == SUCCESS and got.ProcedureStepState == "IN PROGRESS"
        data = [length for is_command, length in received() if not is_command]
        assert data and sum(data) > 0  # the attributes, in a data set
        assoc.responses.clear()
        status, got = assoc.send_n_get([0x00081195], UPS_PULL, uid)  # Transaction UID: never
        assert status.Status == SUCCESS and len(got) == 0
        (message,) = assoc.responses
        assert message.command_set.CommandDataSetType == NO_DATASET
        assert [is_command for is_command, _ in received()] == [True]
