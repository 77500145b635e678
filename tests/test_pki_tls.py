"""The issued certificates in real TLS: Python `ssl` mutual TLS and DCMTK as a peer."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from conftest import free_port, require_tool, wait_port
from tdwii_cli.pki.authority import init_pki, issue_node, revoke

SERVER = "servers/worklistmanager/worklistmanager"
CLIENT = "clients/workitemcreator/workitemcreator"


def server_context(directory: Path, ca: Path, crl: Path | None = None) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(directory / f"{SERVER}.pem", directory / f"{SERVER}.key")
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if crl is not None:
        ctx.load_verify_locations(crl)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def client_context(cert_dir: Path, ca: Path, node: str = CLIENT) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert_dir / f"{node}.pem", cert_dir / f"{node}.key")
    ctx.load_verify_locations(ca)
    return ctx


@dataclass
class ServerResult:
    peer_cn: str | None = None
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


def run_one_handshake(ctx: ssl.SSLContext) -> tuple[int, ServerResult, socket.socket]:
    """Listen on an ephemeral loopback port; accept one TLS connection in a thread."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    listener.settimeout(10)
    result = ServerResult()

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(10)
            with ctx.wrap_socket(conn, server_side=True) as tls:
                peer = tls.getpeercert()
                subject = dict(x[0] for x in peer["subject"]) if peer else {}
                result.peer_cn = subject.get("commonName")
                tls.sendall(b"hello " + (result.peer_cn or "?").encode())
                tls.recv(16)
        except (OSError, ssl.SSLError) as exc:
            result.error = str(exc)
        finally:
            result.done.set()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1], result, listener


def client_talk(ctx: ssl.SSLContext, port: int, hostname: str = "localhost") -> bytes:
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        data = tls.recv(64)  # with TLS 1.3 a refused client certificate shows up here
        if not data:
            raise ConnectionError("server closed the connection")
        tls.sendall(b"bye")
        return data


def test_mutual_tls_handshake_succeeds(pki_dir: Path) -> None:
    ca = pki_dir / "rootCA/rootCA.pem"
    port, result, listener = run_one_handshake(server_context(pki_dir, ca))
    try:
        reply = client_talk(client_context(pki_dir, ca), port)
        assert result.done.wait(10)
    finally:
        listener.close()
    assert result.error is None
    assert result.peer_cn == "workitemcreator"
    assert reply == b"hello workitemcreator"


@pytest.mark.parametrize("hostname", ["127.0.0.1", "::1"])
def test_server_certificate_matches_ip_sans(pki_dir: Path, hostname: str) -> None:
    ca = pki_dir / "rootCA/rootCA.pem"
    port, result, listener = run_one_handshake(server_context(pki_dir, ca))
    try:
        assert client_talk(client_context(pki_dir, ca), port, hostname).startswith(b"hello")
        assert result.done.wait(10)
    finally:
        listener.close()


def test_client_certificate_from_other_ca_is_refused(pki_dir: Path, other_ca_pki: Path) -> None:
    ca = pki_dir / "rootCA/rootCA.pem"
    port, result, listener = run_one_handshake(server_context(pki_dir, ca))
    try:
        # the impostor trusts our CA (so it accepts the server) but its own cert is foreign
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_cert_chain(other_ca_pki / f"{CLIENT}.pem", other_ca_pki / f"{CLIENT}.key")
        ctx.load_verify_locations(ca)
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            client_talk(ctx, port)
        assert result.done.wait(10)
    finally:
        listener.close()
    assert result.peer_cn is None
    assert result.error is not None and "certificate" in result.error.lower()


def test_server_from_other_ca_is_refused_by_client(pki_dir: Path, other_ca_pki: Path) -> None:
    port, result, listener = run_one_handshake(
        server_context(other_ca_pki, other_ca_pki / "rootCA/rootCA.pem")
    )
    try:
        with pytest.raises(ssl.SSLCertVerificationError):
            client_talk(client_context(pki_dir, pki_dir / "rootCA/rootCA.pem"), port)
        assert result.done.wait(10)
    finally:
        listener.close()
    assert result.peer_cn is None


def test_revoked_client_is_refused_with_the_crl(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    init_pki(directory)
    issue_node(directory, "client", "watcher")
    revoke(directory, "watcher")
    ca, crl = directory / "rootCA/rootCA.pem", directory / "rootCA/rootCA.crl.pem"
    # a client that is not revoked still gets in with the CRL loaded
    port, result, listener = run_one_handshake(server_context(directory, ca, crl))
    try:
        assert client_talk(client_context(directory, ca), port) == b"hello workitemcreator"
        assert result.done.wait(10)
    finally:
        listener.close()
    # the revoked one does not
    port, result, listener = run_one_handshake(server_context(directory, ca, crl))
    try:
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            client_talk(client_context(directory, ca, "clients/watcher/watcher"), port)
        assert result.done.wait(10)
    finally:
        listener.close()
    assert result.error is not None and "revoked" in result.error.lower()


@pytest.mark.parametrize("profile", [[], ["+pz"]], ids=["default-profile", "bcp195-ex-tls12"])
def test_dcmtk_echo_with_issued_certificates(pki_dir: Path, profile: list[str]) -> None:
    """DCMTK storescp (server cert) and echoscu (client cert) accept the issued PKI."""
    storescp = require_tool("storescp")
    echoscu = require_tool("echoscu")
    port = free_port()
    ca = str(pki_dir / "rootCA/rootCA.pem")
    server = subprocess.Popen(
        [
            storescp,
            "+tls",
            str(pki_dir / f"{SERVER}.key"),
            str(pki_dir / f"{SERVER}.pem"),
            "+cf",
            ca,
            *profile,
            "--output-directory",
            str(pki_dir.parent),
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_port(port, server, what="storescp")
        proc = subprocess.run(
            [
                echoscu,
                "-d",
                "+tls",
                str(pki_dir / f"{CLIENT}.key"),
                str(pki_dir / f"{CLIENT}.pem"),
                "+cf",
                ca,
                *profile,
                "127.0.0.1",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        log = proc.stdout + proc.stderr
        assert "Received Echo Response (Success)" in log
        # with EC keys DCMTK's default profile has no TLS 1.2 suite; +pz gives ECDHE-ECDSA 1.2
        assert ("Protocol    : TLSv1.2" if profile else "Protocol    : TLSv1.3") in log
    finally:
        server.terminate()
        try:
            server.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            server.kill()
            server.communicate()
