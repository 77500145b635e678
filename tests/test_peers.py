"""The guard the tests put on pynetdicom when they drive it as a peer (tests/peers.py)."""

from __future__ import annotations

from pynetdicom.dimse_primitives import C_ECHO

from conftest import TdwiiServer, wait_until
from peers import keep_responses_for_the_caller, scu_association

VERIFICATION = "1.2.840.10008.1.1"


def test_reactor_poll_leaves_responses_for_the_waiting_caller(tdwii_server: TdwiiServer) -> None:
    """The guard, deterministically: the reactor's non-blocking poll does not take a
    response off the DIMSE queue; the blocking get of the send_*() caller does."""
    with scu_association(tdwii_server, VERIFICATION, ae_title="GUARD", guard=False) as assoc:
        assert assoc.is_established
        keep_responses_for_the_caller(assoc)
        assert getattr(type(assoc.dimse), "_tdwii_guard", False)
        rsp = C_ECHO()
        rsp.MessageIDBeingRespondedTo = 7
        rsp.Status = 0x0000
        request = C_ECHO()
        request.MessageID = 8
        assoc._reactor_checkpoint.clear()  # keep the real reactor out of this
        wait_until(lambda: assoc._is_paused, 10, "the association reactor to pause", 0.001)
        assoc.dimse.msg_queue.put((1, rsp))
        assert assoc.dimse.get_msg(block=False) == (None, None)
        assert assoc.dimse.msg_queue.qsize() == 1
        assert assoc.dimse.get_msg(block=True) == (1, rsp)
        assoc.dimse.msg_queue.put((1, request))  # a request from the peer is still served
        assert assoc.dimse.get_msg(block=False) == (1, request)
        assoc._reactor_checkpoint.set()
        assert assoc.send_c_echo().Status == 0  # and the association still works
