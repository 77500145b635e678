"""Foreign SCUs against a real `tdwii serve --mtls` (a subprocess, the test PKI made by
`tdwii pki init`, real TLS):

- No data set flag without a data set: from bytes, the response to each request with an empty
  data set says "no data set" (Command Data Set Type 0x0101) and has none (a C-FIND pending
  response keeps its identifier); over the wire, pynetdicom sees N-CREATE, N-SET and N-ACTION
  responses, successes and failures, with 0x0101 and no data set PDV, and an N-GET response
  with its attributes, or none when there is nothing to return.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import evt

from conftest import TdwiiServer, start_tdwii_server
from tdwii_cli.dicom.uids import EXPLICIT_VR_LE, IMPLICIT_VR_LE
from tdwii_cli.net import dimse
from tdwii_cli.scp import replies
from tdwii_cli.scp.messages import Reply, Request
from tdwii_cli.ups.workitem import build_workitem
from upsops import DAY, UPS_PULL, UPS_PUSH, tdd

NO_DATASET = 0x0101
PENDING, SUCCESS = 0xFF00, 0x0000


@pytest.fixture(scope="module")
def server(serve_workdir: Path) -> Iterator[TdwiiServer]:
    """`tdwii serve --mtls` at -v (its log names each handshake's TLS version)."""
    running = start_tdwii_server(serve_workdir, log_name="foreign")
    try:
        yield running
    finally:
        running.stop()


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
