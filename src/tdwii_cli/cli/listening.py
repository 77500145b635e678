"""The one-line error for a port we cannot listen on (`serve`, `ups watch`)."""

import errno
import socket

from tdwii_cli.errors import TdwiiError


def listen_error(exc: OSError, host: str, port: int) -> TdwiiError:
    where = f"{host or 'all interfaces'} port {port}"
    if exc.errno == errno.EADDRINUSE:
        return TdwiiError(
            f"cannot listen on {where}: the port is in use",
            hint="stop the other server or choose another --port",
        )
    if exc.errno == errno.EACCES:
        return TdwiiError(
            f"cannot listen on {where}: permission denied",
            hint="ports below 1024 need privileges; use 2762 (TLS) or 11112",
        )
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return TdwiiError(
            f"cannot listen on {where}: no such local address",
            hint="give an address of this host to --bind-address, or leave it out",
        )
    return TdwiiError(f"cannot listen on {where}: {exc.strerror or exc}")
