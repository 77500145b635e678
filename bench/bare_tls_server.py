#!/usr/bin/env python3
"""The floor for `bench/serve_assoc.py`: the least a Python server can do per association.

tdwii's own server TLS context (mutual TLS, the default profile, the `tdwii pki init`
layout of the current folder, no session tickets), one thread per connection,
TCP_NODELAY, and fixed answers: any A-ASSOCIATE-RQ gets the same A-ASSOCIATE-AC
(Verification, Implicit VR Little Endian, context 1), any P-DATA-TF a C-ECHO-RSP
(Success, message 1), an A-RELEASE-RQ its RP. Nothing is parsed, checked or logged.

    python bench/bare_tls_server.py PORT
"""

from __future__ import annotations

import socket
import sys
import threading

from tdwii_cli.dicom.uids import IMPLICIT_VR_LE, VERIFICATION
from tdwii_cli.net import dimse, pdu
from tdwii_cli.net.channel import read_pdu
from tdwii_cli.net.errors import UpperLayerError
from tdwii_cli.tls.context import build_server_context
from tdwii_cli.tls.options import resolve


def answers() -> tuple[bytes, bytes]:
    rq = pdu.parse_associate_rq(
        pdu.associate_rq(
            "BENCH", "ANY-SCP", [pdu.PresentationContext(1, VERIFICATION, (IMPLICIT_VR_LE,))]
        )[6:]
    )
    ac = pdu.associate_ac(rq, [(1, 0, IMPLICIT_VR_LE)], 16382)
    rsp = dimse.Command(dimse.C_ECHO_RSP, responding_to=1, sop_class=VERIFICATION, status=0)
    return ac, dimse.encode_message(1, rsp, None, 0)


def serve_one(raw: socket.socket, ctx, ac: bytes, echo_rsp: bytes) -> None:  # type: ignore[no-untyped-def]
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(raw, server_side=True) as sock:
            while True:
                kind, _ = read_pdu(sock)
                if kind == pdu.A_ASSOCIATE_RQ:
                    sock.sendall(ac)
                elif kind == pdu.P_DATA_TF:
                    sock.sendall(echo_rsp)
                elif kind == pdu.A_RELEASE_RQ:
                    sock.sendall(pdu.RELEASE_RP)
                    return
                else:
                    return
    except (OSError, UpperLayerError):
        return


def main() -> int:
    port = int(sys.argv[1])
    ctx = build_server_context(resolve("server", mtls=True))
    ctx.num_tickets = 0
    ac, echo_rsp = answers()
    listener = socket.create_server(("127.0.0.1", port), backlog=128)
    while True:
        raw, _ = listener.accept()
        threading.Thread(target=serve_one, args=(raw, ctx, ac, echo_rsp), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
