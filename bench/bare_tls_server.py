#!/usr/bin/env python3
"""The floor for `bench/serve_assoc.py`: the least a Python server can do per association.

tdwii's own server TLS context (mutual TLS, the default profile, the `tdwii pki init`
layout of the current folder, no session tickets), one thread per connection,
TCP_NODELAY, and fixed answers (`bench/echo_pdus.py`, no tdwii upper layer): any
A-ASSOCIATE-RQ gets the same A-ASSOCIATE-AC (Verification, Implicit VR Little Endian,
context 1; the RQ's AE titles copied back), any P-DATA-TF a C-ECHO-RSP (Success, message
1), an A-RELEASE-RQ its RP. Nothing is parsed, checked or logged.

TCP_QUICKACK is set on the socket as `tdwii serve` sets it (since issue 21), so that the
floor is one for clients that leave Nagle's algorithm on (DCMTK's by default, pynetdicom,
Java, dcmjs-dimse) too: such a client holds a small write until its previous one is
acknowledged, and Linux delays an ACK up to 40 ms unless data goes back or QUICKACK says
otherwise. So it is set
- right after the handshake: with no TLS 1.3 session ticket to send, nothing else would
  acknowledge the client's Finished, and the client would hold its A-ASSOCIATE-RQ;
- whenever a read leaves a PDU incomplete (`echo_pdus.read_pdu(..., ack=True)`): DCMTK's
  `echoscu` writes a P-DATA-TF's header and its PDV in two writes, and would hold the
  second.
Without it the floor would stall such clients 40 ms at each of those points (DCMTK's
`storescp` stalls `echoscu` at the second, whatever its TCP_NODELAY); with it, it costs a
setsockopt after each handshake and each partial read.

    python bench/bare_tls_server.py PORT
"""

from __future__ import annotations

import socket
import sys
import threading

import echo_pdus as dul

from tdwii_cli.tls.context import build_server_context
from tdwii_cli.tls.options import resolve


def serve_one(raw: socket.socket, ctx, ac: bytes) -> None:  # type: ignore[no-untyped-def]
    try:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with ctx.wrap_socket(raw, server_side=True) as sock:
            dul.quickack(sock)  # the client's Finished: no session ticket answers it
            while True:
                kind, payload = dul.read_pdu(sock, ack=True)
                if kind == dul.A_ASSOCIATE_RQ:
                    sock.sendall(dul.answer_titles(ac, payload))
                elif kind == dul.P_DATA_TF:
                    sock.sendall(dul.ECHO_RSP)
                elif kind == dul.A_RELEASE_RQ:
                    sock.sendall(dul.RELEASE_RP)
                    return
                else:
                    return
    except (OSError, ValueError, dul.Closed):
        return


def main() -> int:
    port = int(sys.argv[1])
    ctx = build_server_context(resolve("server", mtls=True))
    ctx.num_tickets = 0
    ac = dul.associate_ac()
    listener = socket.create_server(("127.0.0.1", port), backlog=128)
    while True:
        raw, _ = listener.accept()
        threading.Thread(target=serve_one, args=(raw, ctx, ac), daemon=True).start()


if __name__ == "__main__":
    sys.exit(main())
