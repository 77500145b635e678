"""Socket details every DICOM connection shares: no Nagle delay, and how a peer is named."""

from __future__ import annotations

import contextlib
import socket
from typing import Any


def set_nodelay(sock: socket.socket) -> None:
    """Send small DICOM PDUs at once (no Nagle delay against the peer's delayed ACK)."""
    with contextlib.suppress(OSError):  # not a TCP socket, or already closed
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def format_peer(address: Any) -> str:
    """'host:port' ('[v6]:port' for IPv6; an IPv4-mapped IPv6 address shown as IPv4)."""
    if isinstance(address, tuple) and len(address) >= 2:
        host, port = str(address[0]), address[1]
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return str(address)
