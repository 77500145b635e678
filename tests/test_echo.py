"""`tdwii echo` odds and ends against real peers: AE title checks (an empty called AE title
used to reach DCMTK, which hung up, and came back as a TLS certificate error, exit 63),
IPv6 loopback, and the host name check turned off reaching the DICOM stage."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import free_port, require_tool
from tdwii_cli import pki

CA = "rootCA/rootCA.pem"
SRV = "servers/worklistmanager/worklistmanager"
CLI = "clients/workitemcreator/workitemcreator"


def echo(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "echo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def mtls(root: Path) -> list[str]:
    return [
        "--mtls",
        "-ca",
        str(root / CA),
        "-cert",
        f"{root / CLI}.pem",
        "-key",
        f"{root / CLI}.key",
    ]


@pytest.fixture(scope="module")
def storescp(pki_dir: Path) -> Iterator[int]:
    """DCMTK storescp +tls, peer certificate required, on a loopback port."""
    exe = require_tool("storescp")
    port = free_port()
    cmd = [exe, "+tls", f"{pki_dir / SRV}.key", f"{pki_dir / SRV}.pem"]
    cmd += ["+cf", str(pki_dir / CA), str(port)]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            assert proc.poll() is None, "storescp exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "storescp did not listen"
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.parametrize(
    ("option", "value", "words"),
    [
        ("-aec", "", "at least one character"),
        ("-aec", "    ", "at least one character"),
        ("-aet", "A" * 17, "longer than 16"),
        ("-aet", "A\\B", "backslash"),
        ("-aec", "ÄRZTE", "ASCII"),
    ],
)
def test_bad_ae_titles_are_usage_errors_before_connecting(
    pki_dir: Path, option: str, value: str, words: str
) -> None:
    # a closed port: exit 2 (usage), not 60, shows nothing was attempted on the network
    proc = echo(*mtls(pki_dir), option, value, "127.0.0.1", str(free_port()))
    assert proc.returncode == 2, proc.stderr
    assert words in " ".join(proc.stderr.replace("│", " ").split())  # rich box, wrapped
    assert "Traceback" not in proc.stderr


def test_sixteen_character_called_ae_title_reaches_dcmtk(pki_dir: Path, storescp: int) -> None:
    title = "SIXTEEN-CHARS-AE"
    assert len(title) == 16
    proc = echo(*mtls(pki_dir), "-aet", "MY-SCU", "-aec", title, "localhost", str(storescp))
    assert proc.returncode == 0, proc.stderr
    assert f"{title}@localhost" in proc.stdout and "0x0000" in proc.stdout


def test_padded_ae_title_is_trimmed(pki_dir: Path, storescp: int) -> None:
    proc = echo(*mtls(pki_dir), "-aec", "  STORESCP  ", "-v", "localhost", str(storescp))
    assert proc.returncode == 0, proc.stderr
    assert "STORESCP@localhost" in proc.stdout and "  STORESCP" not in proc.stdout


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_abort_over_tls_is_62_not_a_certificate_error(pki_dir: Path, host: str) -> None:
    """A Python TLS server with the pki server certificate answers the A-ASSOCIATE-RQ with
    an A-ABORT: exit 62 "aborted" (it was 63 "did not accept our certificate"). The handshake
    passes by address only because the default SANs hold 127.0.0.1 and ::1."""
    if host == "::1" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(f"{pki_dir / SRV}.pem", f"{pki_dir / SRV}.key")
    ctx.load_verify_locations(str(pki_dir / CA))
    ctx.verify_mode = ssl.CERT_REQUIRED
    server = socket.create_server((host, 0), family=family)
    port = server.getsockname()[1]
    seen: list[str] = []

    def serve() -> None:
        conn, _ = server.accept()
        try:
            conn.settimeout(10)
            tls_conn = ctx.wrap_socket(conn, server_side=True)
            seen.append(tls_conn.version() or "")
            head = b""
            while len(head) < 6:  # the A-ASSOCIATE-RQ header, then all of it (no RST on close)
                head += tls_conn.recv(6 - len(head))
            rest = int.from_bytes(head[2:6], "big")
            while rest:
                rest -= len(tls_conn.recv(rest))
            tls_conn.sendall(b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00")  # A-ABORT
            time.sleep(0.5)  # let the client read the abort before we close
            tls_conn.close()
        except OSError as exc:
            seen.append(f"error {exc}")
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        proc = echo(*mtls(pki_dir), "-ta", "5", host, str(port))
    finally:
        thread.join(15)
        server.close()
    assert seen and seen[0].startswith("TLSv1."), seen  # the handshake passed on the server
    assert proc.returncode == 62, proc.stderr
    assert "A-ABORT" in proc.stderr and "certificate" not in proc.stderr
    assert "Traceback" not in proc.stderr


def test_no_verify_hostname_gets_past_tls(pki_dir: Path, tmp_path: Path) -> None:
    """A certificate for another name: refused (63) with the check on; with
    --no-verify-hostname the TLS part passes and s_server (no DICOM node) never answers the
    A-ASSOCIATE-RQ: exit 62 "did not answer in time" (it was 63, blamed on our certificate)."""
    exe = require_tool("openssl")
    ca_key = pki.load_key(pki_dir / "rootCA/rootCA.key")
    ca_cert = pki.load_cert(pki_dir / CA)
    key, cert = pki.make_leaf(ca_key, ca_cert, "other", sans=["other.example"], default_sans=False)
    pki.write_key(tmp_path / "o.key", key)
    pki.write_cert(tmp_path / "o.pem", cert)
    results = []
    for extra in ([], ["--no-verify-hostname"]):
        port = free_port()
        cmd = [exe, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(tmp_path / "o.pem")]
        cmd += ["-key", str(tmp_path / "o.key")]
        server = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    assert time.monotonic() < deadline and server.poll() is None
                    time.sleep(0.05)
            results.append(echo(*mtls(pki_dir), *extra, "-ta", "2", "127.0.0.1", str(port)))
        finally:
            server.kill()
            server.wait(10)
    checked, unchecked = results
    assert checked.returncode == 63 and "host name mismatch" in checked.stderr
    assert unchecked.returncode == 62, unchecked.stderr
    assert "did not answer in time" in unchecked.stderr
    assert "host name check is off" in unchecked.stderr
    assert "TLS handshake" not in unchecked.stderr
