"""Fair under pressure, against a real `tdwii serve --mtls` and `tdwii ups watch`: no single
certificate, from however many loopback addresses, and no certificate-less crowd of 1,000
connections from 100 addresses keeps another device out for more than a second; a flood
costs a bounded log.

Another device is a second client certificate (`otherdevice`) connecting from 127.0.0.2;
its associations are timed in this process (connect, TLS, associate, C-ECHO, release), so
that the Python start-up of a command is not what is measured.
"""

from __future__ import annotations

import contextlib
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    TdwiiServer,
    client_ssl_context,
    free_port,
    start_tdwii_server,
    tls_options,
    wait_until,
)
from tdwii_cli.client.echo import run_echo
from tdwii_cli.dicom.uids import EXPLICIT_VR_LE, VERIFICATION
from tdwii_cli.net import pdu
from tdwii_cli.net.channel import read_pdu
from tdwii_cli.net.options import ScuOptions

OTHER = "clients/otherdevice/otherdevice"
ECHO_CONTEXT = [pdu.PresentationContext(1, VERIFICATION, (EXPLICIT_VR_LE,))]


@pytest.fixture(scope="module")
def workdir(serve_workdir: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "pki", "issue", "client", "otherdevice", "-q"],
        cwd=serve_workdir,
        check=True,
        capture_output=True,
    )
    return serve_workdir


@contextlib.contextmanager
def serving(workdir: Path, *args: str, name: str) -> Iterator[TdwiiServer]:
    server = start_tdwii_server(workdir, "--log-summary", "1", *args, log_name=name)
    try:
        yield server
    finally:
        server.stop()


def other_device_echo(workdir: Path, port: int, source: str = "127.0.0.2") -> float:
    """Seconds another device takes for a whole association (asserts it succeeds)."""
    tls = tls_options(workdir / "certs", "client", node=OTHER)
    net = ScuOptions(connect_timeout=5, acse_timeout=5, dimse_timeout=5, source_address=source)
    begin = time.monotonic()
    result = run_echo("127.0.0.1", port, tls=tls, net=net)
    took = time.monotonic() - begin
    assert result.statuses == [0]
    return took


def stalled_association(workdir: Path, port: int, source: str) -> ssl.SSLSocket | None:
    """An association with the attacker's certificate (workitemcreator) from `source`,
    left halfway through a P-DATA-TF header; None when it was rejected."""
    ctx = client_ssl_context(workdir / "certs")
    raw = socket.create_connection(("127.0.0.1", port), timeout=10, source_address=(source, 0))
    sock = ctx.wrap_socket(raw, server_hostname="localhost")
    sock.sendall(pdu.associate_rq("ATTACKER", "UPSSCP", ECHO_CONTEXT))
    kind, _ = read_pdu(sock)
    if kind != pdu.A_ASSOCIATE_AC:
        sock.close()
        return None
    sock.sendall(struct.pack(">BBL", pdu.P_DATA_TF, 0, 1000)[:3])
    return sock


def aborted(sock: socket.socket, timeout: float) -> bool:
    sock.settimeout(timeout)
    try:
        return read_pdu(sock)[0] == pdu.A_ABORT
    except (OSError, ssl.SSLError, ValueError):
        return True
    except Exception:
        return True


def test_one_certificate_from_twelve_addresses_cannot_lock_another_device_out(
    workdir: Path,
) -> None:
    with serving(workdir, name="fair-cert") as server:  # 10 associations, 5 per host
        held = [stalled_association(workdir, server.port, f"127.0.3.{i}") for i in range(1, 13)]
        try:
            got = [s for s in held if s is not None]
            assert len(got) == 5  # 5 per certificate, however many addresses it comes from
            for _ in range(3):
                assert other_device_echo(workdir, server.port) < 1.0
            text = server.wait_log("associations per certificate")
            assert "local limit exceeded (5 associations per certificate)" in text
        finally:
            for sock in held:
                if sock is not None:
                    sock.close()


def test_when_every_slot_is_held_a_newcomer_takes_the_longest_idle_one(workdir: Path) -> None:
    # per host = total (as behind a proxy): one certificate can hold every slot
    limits = ["--max-associations", "6", "--max-associations-per-host", "6"]
    with serving(workdir, *limits, name="fair-evict") as server:
        held = [stalled_association(workdir, server.port, f"127.0.4.{i}") for i in range(1, 7)]
        try:
            assert all(s is not None for s in held)
            assert stalled_association(workdir, server.port, "127.0.4.7") is None  # full
            assert other_device_echo(workdir, server.port) < 1.0
            oldest = held[0]
            assert oldest is not None and aborted(oldest, 5)  # the longest idle made room
            text = server.wait_log("its slot was given to another device")
            assert "127.0.4.1:" in text.split("its slot was given")[0].rsplit("\n", 1)[-1]
            for _ in range(2):
                assert other_device_echo(workdir, server.port) < 1.0
        finally:
            for sock in held:
                if sock is not None:
                    sock.close()


class Crowd:
    """`per_address` TCP connections from each of `addresses`, that never start TLS: held
    open until `close()` (the server may close some: they are counted, not reopened)."""

    def __init__(self, port: int, addresses: list[str], per_address: int) -> None:
        self.socks: list[socket.socket] = []
        for address in addresses:
            for _ in range(per_address):
                sock = socket.socket()
                sock.setblocking(False)
                sock.bind((address, 0))
                with contextlib.suppress(BlockingIOError):
                    sock.connect(("127.0.0.1", port))
                self.socks.append(sock)

    def established(self) -> int:
        """How many are connected (accepted by the kernel, if not by the server)."""
        count = 0
        for sock in self.socks:
            with contextlib.suppress(OSError):
                sock.getpeername()
                count += 1
        return count

    def close(self) -> None:
        for sock in self.socks:
            sock.close()


ADDRESSES = [f"127.0.{5 + i // 50}.{1 + i % 50}" for i in range(100)]


def test_a_crowd_of_1000_certificateless_connections_from_100_addresses_keeps_no_one_out(
    workdir: Path,
) -> None:
    with serving(workdir, name="fair-crowd") as server:  # 512 pending places, 16 per host
        crowd = Crowd(server.port, ADDRESSES, 10)
        try:
            wait_until(lambda: crowd.established() >= 900, 20, "the crowd to connect")
            server.wait_log("to make room for another host")  # the places are all taken
            for _ in range(3):
                assert other_device_echo(workdir, server.port) < 1.0
        finally:
            crowd.close()


def test_a_reconnecting_flood_of_failed_handshakes_costs_a_bounded_log(workdir: Path) -> None:
    stop = threading.Event()
    failures = [0]

    def flood(source: str) -> None:
        # TLS without a client certificate: each handshake fails on the server
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        while not stop.is_set():
            try:
                raw = socket.create_connection(
                    ("127.0.0.1", port), timeout=5, source_address=(source, 0)
                )
                with ctx.wrap_socket(raw) as sock:
                    sock.sendall(b"x")
                    sock.recv(1)
            except OSError:
                pass
            failures[0] += 1

    with serving(workdir, name="fair-logflood") as server:
        port = server.port
        start = len(server.log_text())
        sources = [f"127.0.7.{i}" for i in range(1, 6)] + [f"127.0.8.{i}" for i in range(1, 6)]
        threads = [threading.Thread(target=flood, args=(s,), daemon=True) for s in sources]
        begin = time.monotonic()
        for thread in threads:
            thread.start()
        try:
            wait_until(lambda: failures[0] >= 300, 60, "300 failed handshakes")
            assert other_device_echo(workdir, port) < 1.0
        finally:
            stop.set()
            for thread in threads:
                thread.join(10)
        seconds = time.monotonic() - begin

        def counted() -> int:
            text = server.log_text()[start:]
            total = text.count("TLS handshake failed")
            for match in re.finditer(r"(\d+) more connections? from \S+ failed their TLS", text):
                total += int(match.group(1))
            return total

        wait_until(lambda: counted() >= failures[0] * 0.9, 5, "the failures told in counts")
        lines = server.log_text()[start:].splitlines()
        # 2 networks: per second at most one line and one count each (and the echo's lines)
        assert len(lines) <= 6 * (seconds + 2), len(lines)
        assert failures[0] > 5 * len(lines)


def test_ups_watch_keeps_taking_reports_under_the_same_crowd(workdir: Path) -> None:
    port = free_port()
    err = workdir / "watch-crowd.err"
    command = [sys.executable, "-m", "tdwii_cli", "ups", "watch", "--mtls", "-p", str(port)]
    command += ["-ba", "127.0.0.1", "-aet", "WATCHER", "-v"]
    with err.open("wb") as fh:
        watch = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=fh)
    try:
        wait_until(lambda: "listening" in err.read_text(), 30, lambda: err.read_text())
        crowd = Crowd(port, ADDRESSES, 10)  # 128 pending places, 16 per host
        try:
            wait_until(lambda: "to make room" in err.read_text(), 20, "the places to be taken")
            for _ in range(3):
                assert other_device_echo(workdir, port) < 1.0
        finally:
            crowd.close()
    finally:
        watch.terminate()
        watch.wait(20)
