"""How to associate with a peer: the AE titles and the DCMTK-style timeouts (plain data)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ScuOptions:
    """Our and the peer's AE titles and the timeouts (seconds) of an association we request.

    `connect_timeout` bounds the TCP connect and the TLS handshake, `acse_timeout`
    the association request and release, `dimse_timeout` each response;
    `network_timeout` is the longest idle time. `source_address` is the local address
    to connect from ('' lets the system choose).
    """

    calling_aet: str = "TDWII"
    called_aet: str = "ANY-SCP"
    connect_timeout: float = 10.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 30.0
    network_timeout: float = 60.0
    source_address: str = ""
