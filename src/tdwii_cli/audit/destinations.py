"""Where audit messages go, and how each kind is sent: a file, syslog over TLS (RFC 5425),
syslog over UDP (RFC 5426).

`parse()` reads a destination as given to `--audit`: `syslog+tls://HOST[:PORT]` (6514
by default), `udp://HOST[:PORT]` (514), or a file path. A sink's `send(messages)`
returns once the messages are delivered as far as the transport can tell, and raises
`SinkError` (one line) when they may not be:

- a file: appended as lines (written at once: a `kill -9` loses none), fsynced when the
  sender is idle and at least once a second while it is busy, so that it does not double
  the database's disk flushes. The file's length after each batch is kept with the
  spool's cursor, so after a crash the lines written but not yet counted are recognised
  (`resume()`) and not written twice; a line cut short is removed.
- syslog over TLS: one connection, mutual TLS with the option group's profile, the
  repository's host name checked. Before each batch the connection is checked for a
  close by the repository; after it, `send` waits until the repository's TCP stack has
  acknowledged every byte (SIOCOUTQ is zero): what it has not acknowledged is not
  counted as sent, so a repository that stops loses nothing and gets nothing twice.
  RFC 5425 has no acknowledgement by the application: a repository that dies with
  bytes unread in its socket loses them.
- syslog over UDP: one datagram per message, best effort (RFC 5426); a refusal the
  network reports (ICMP port unreachable) fails the next send.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import select
import socket
import ssl
import struct
import termios
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from tdwii_cli.audit.syslog import octet_counted
from tdwii_cli.errors import TdwiiError
from tdwii_cli.fileio import KEY_MODE, PRIVATE_DIR_MODE, make_dirs

log = logging.getLogger("tdwii.audit")

Kind = Literal["file", "tls", "udp"]
DEFAULT_PORTS = {"tls": 6514, "udp": 514}
_SCHEMES = {"syslog+tls://": "tls", "udp://": "udp", "syslog+udp://": "udp"}
MAX_UDP = 65000


class SinkError(Exception):
    """A destination did not take a batch (the message says why, in one line)."""


@dataclass(frozen=True)
class Destination:
    """One audit destination: `text` as given (it names the destination's cursor)."""

    kind: Kind
    text: str
    path: Path | None = None
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        return self.text


def parse(text: str) -> Destination:
    """A destination from `--audit`'s value; `TdwiiError` (one line) when it is none."""
    value = text.strip()
    for scheme, kind in _SCHEMES.items():
        if value.lower().startswith(scheme):
            rest = value[len(scheme) :].rstrip("/")
            host, port = _host_port(text, rest, DEFAULT_PORTS[kind])
            return Destination(kind, value, host=host, port=port)  # type: ignore[arg-type]
    if "://" in value:
        raise TdwiiError(
            f"audit destination {text!r}: unknown scheme",
            hint="use syslog+tls://HOST:6514, udp://HOST:514 or a file path",
        )
    if not value:
        raise TdwiiError("audit destination is empty", hint="give a file path or a syslog URL")
    return Destination("file", value, path=Path(value))


def _host_port(text: str, rest: str, default: int) -> tuple[str, int]:
    if rest.startswith("["):  # [v6]:port
        host, _, tail = rest[1:].partition("]")
        port_text = tail[1:] if tail.startswith(":") else ""
    elif rest.count(":") == 1:
        host, port_text = rest.split(":")
    else:
        host, port_text = rest, ""
    if not host:
        raise TdwiiError(f"audit destination {text!r} names no host")
    if not port_text:
        return host, default
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise TdwiiError(f"audit destination {text!r}: {port_text!r} is not a TCP/UDP port")
    return host, int(port_text)


class Sink(Protocol):
    """Sends batches of framed syslog messages to one destination."""

    def send(self, messages: list[bytes]) -> int | None:
        """Deliver `messages` in order; the file's size after them for a file, else None."""
        ...

    def idle(self) -> None:
        """Nothing waits to be sent: a moment to flush what is pending."""
        ...

    def close(self) -> None: ...


# -- a file ------------------------------------------------------------------------------


class FileSink:
    """Audit messages appended to a local file, one RFC 5424 message per line (0600)."""

    def __init__(self, path: Path, sync_every: float = 1.0) -> None:
        self.path = path
        self.sync_every = sync_every
        self._fd: int | None = None
        self._dirty = False
        self._synced = time.monotonic()

    def _open(self) -> int:
        if self._fd is None:
            try:
                make_dirs(self.path.parent, PRIVATE_DIR_MODE)
                self._fd = os.open(
                    self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, KEY_MODE
                )
            except OSError as exc:
                raise SinkError(f"cannot open {self.path}: {exc.strerror or exc}") from None
        return self._fd

    def resume(self, recorded_size: int | None) -> tuple[int, int]:
        """After a restart: (complete lines written past `recorded_size`, the file's size
        now). A last line cut short (a crash mid-write) is cut off the file."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return 0, 0
        except OSError as exc:
            raise SinkError(f"cannot read {self.path}: {exc.strerror or exc}") from None
        if recorded_size is None or size <= recorded_size:
            return 0, size  # a new or rotated file: nothing of ours after the mark
        with open(self.path, "rb") as fh:
            fh.seek(recorded_size)
            tail = fh.read()
        complete = tail.rfind(b"\n") + 1
        if complete < len(tail):
            os.truncate(self.path, recorded_size + complete)
        return tail[:complete].count(b"\n"), recorded_size + complete

    def send(self, messages: list[bytes]) -> int:
        fd = self._open()
        data = b"".join(m + b"\n" for m in messages)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            self._dirty = True
            if time.monotonic() - self._synced >= self.sync_every:
                self._sync(fd)
            return os.fstat(fd).st_size
        except OSError as exc:
            self.close()
            raise SinkError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def _sync(self, fd: int) -> None:
        os.fsync(fd)
        self._dirty = False
        self._synced = time.monotonic()

    def idle(self) -> None:
        if self._fd is not None and self._dirty:
            with contextlib.suppress(OSError):
                self._sync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            self.idle()
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None


# -- syslog over TLS ---------------------------------------------------------------------


def unacknowledged(sock: socket.socket) -> int:
    """Bytes sent on `sock` that the peer's TCP has not acknowledged yet (Linux SIOCOUTQ)."""
    buf = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
    return int(struct.unpack("i", buf)[0])


class TlsSink:
    """RFC 5425: syslog over mutual TLS, octet-counted frames on one connection."""

    def __init__(self, destination: Destination, context: ssl.SSLContext, timeout: float = 10.0):
        self.destination = destination
        self.context = context
        self.timeout = timeout
        self._sock: ssl.SSLSocket | None = None
        self._raw: socket.socket | None = None  # while connecting: `close()` may cut it

    def _connect(self) -> ssl.SSLSocket:
        from tdwii_cli.tls.diagnosis import describe_handshake_error

        host, port = self.destination.host, self.destination.port
        try:
            raw = socket.create_connection((host, port), timeout=self.timeout)
        except OSError as exc:
            words = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
            raise SinkError(f"cannot connect to {host}:{port}: {words}") from None
        self._raw = raw
        try:
            sock = self.context.wrap_socket(raw, server_hostname=host)
        except OSError as exc:
            raw.close()
            failure = describe_handshake_error(exc, side="client", context=self.context)
            raise SinkError(f"TLS handshake with {host}:{port} failed: {failure.reason}") from None
        finally:
            self._raw = None
        return sock

    def _closed_by_peer(self, sock: ssl.SSLSocket) -> bool:
        """Has the repository closed the connection (or sent something it should not)?"""
        readable, _, _ = select.select([sock], [], [], 0)
        if not readable and not sock.pending():
            return False
        sock.setblocking(False)
        try:
            data = sock.recv(4096)
        except ssl.SSLWantReadError:  # only TLS housekeeping (a session ticket): still open
            return False
        except (OSError, ValueError):
            return True
        finally:
            with contextlib.suppress(OSError, ValueError):
                sock.settimeout(self.timeout)
        del data  # the end of the stream, or data a syslog receiver never sends: broken
        return True

    def send(self, messages: list[bytes]) -> None:
        sock = self._sock
        if sock is not None and self._closed_by_peer(sock):
            self.close()
            sock = None
        if sock is None:
            sock = self._sock = self._connect()
            sock.settimeout(self.timeout)
        try:
            sock.sendall(b"".join(octet_counted(m) for m in messages))
            self._wait_acknowledged(sock)
        except (OSError, ValueError) as exc:
            self.close()
            raise SinkError(
                f"connection to {self.destination.host}:{self.destination.port} lost: "
                f"{getattr(exc, 'strerror', None) or exc}"
            ) from None

    def _wait_acknowledged(self, sock: ssl.SSLSocket) -> None:
        deadline = time.monotonic() + self.timeout
        pause = 0.001  # an acknowledgement comes at once, or after the peer's delayed ACK
        while unacknowledged(sock) > 0:
            if time.monotonic() >= deadline:
                raise TimeoutError("the repository did not acknowledge within the timeout")
            if self._closed_by_peer(sock):
                raise ConnectionResetError("closed by the repository")
            time.sleep(pause)
            pause = min(0.02, pause * 2)

    def idle(self) -> None:
        pass

    def close(self) -> None:
        raw = self._raw
        if raw is not None:  # a handshake under way (from another thread): end it
            with contextlib.suppress(OSError):
                raw.shutdown(socket.SHUT_RDWR)
        sock = self._sock
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
                sock.close()
            self._sock = None


# -- syslog over UDP ---------------------------------------------------------------------


class UdpSink:
    """RFC 5426: one datagram per message, best effort."""

    def __init__(self, destination: Destination) -> None:
        self.destination = destination
        self._sock: socket.socket | None = None

    def send(self, messages: list[bytes]) -> None:
        host, port = self.destination.host, self.destination.port
        if self._sock is None:
            try:
                family, kind, proto, _, address = socket.getaddrinfo(
                    host, port, type=socket.SOCK_DGRAM
                )[0]
                sock = socket.socket(family, kind, proto)
                sock.connect(address)
            except OSError as exc:
                raise SinkError(f"cannot reach {host}:{port}: {exc.strerror or exc}") from None
            self._sock = sock
        for message in messages:
            if len(message) > MAX_UDP:  # cannot go in one datagram
                log.warning(
                    "audit message of %d bytes not sent to %s: over one UDP datagram",
                    len(message),
                    self.destination,
                )
                continue
            try:
                self._sock.send(message)
            except OSError as exc:
                self.close()
                raise SinkError(f"{host}:{port} refused: {exc.strerror or exc}") from None

    def idle(self) -> None:
        pass

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
