"""The guard the tests put on pynetdicom when they drive it as a peer (tests/peers.py)."""

from __future__ import annotations

import ssl
import time

from pynetdicom import AE
from pynetdicom.dimse_primitives import C_ECHO

from conftest import PKI_CA, PKI_CLIENT, TdwiiServer
from peers import keep_responses_for_the_caller

VERIFICATION = "1.2.840.10008.1.1"


def test_reactor_poll_leaves_responses_for_the_waiting_caller(tdwii_server: TdwiiServer) -> None:
    """The guard, deterministically: the reactor's non-blocking poll does not take a
    response off the DIMSE queue; the blocking get of the send_*() caller does."""
    certs = tdwii_server.workdir / "certs"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs / PKI_CA)
    ctx.load_cert_chain(certs / f"{PKI_CLIENT}.pem", certs / f"{PKI_CLIENT}.key")
    ae = AE("GUARD")
    ae.add_requested_context(VERIFICATION)
    assoc = ae.associate("localhost", tdwii_server.port, tls_args=(ctx, "localhost"))
    assert assoc.is_established
    try:
        keep_responses_for_the_caller(assoc)
        assert getattr(type(assoc.dimse), "_tdwii_guard", False)
        rsp = C_ECHO()
        rsp.MessageIDBeingRespondedTo = 7
        rsp.Status = 0x0000
        request = C_ECHO()
        request.MessageID = 8
        assoc._reactor_checkpoint.clear()  # keep the real reactor out of this
        while not assoc._is_paused:
            time.sleep(0.001)
        assoc.dimse.msg_queue.put((1, rsp))
        assert assoc.dimse.get_msg(block=False) == (None, None)
        assert assoc.dimse.msg_queue.qsize() == 1
        assert assoc.dimse.get_msg(block=True) == (1, rsp)
        assoc.dimse.msg_queue.put((1, request))  # a request from the peer is still served
        assert assoc.dimse.get_msg(block=False) == (1, request)
        assoc._reactor_checkpoint.set()
        assert assoc.send_c_echo().Status == 0  # and the association still works
    finally:
        assoc.release()
