"""`tdwii echo` and the TLS layer against real peers: DCMTK storescp, openssl s_server,
Python ssl servers and clients on loopback. Every handshake failure reason is produced
by a real handshake and its words are checked."""

from __future__ import annotations

import datetime as dt
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
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import free_port, require_tool, wait_port
from tdwii_cli import pki
from tdwii_cli.tls import build_client_context, build_server_context, describe_handshake_error
from tdwii_cli.tlsoptions import TlsOptions

CA = "rootCA/rootCA.pem"
SRV = "servers/worklistmanager/worklistmanager"
CLI = "clients/workitemcreator/workitemcreator"


def run_echo(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "echo", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
    )


def client_args(pki_root: Path, node: str = CLI, ca: Path | None = None) -> list[str]:
    return [
        "--mtls",
        "-ca",
        str(ca or pki_root / CA),
        "-cert",
        str(pki_root / f"{node}.pem"),
        "-key",
        str(pki_root / f"{node}.key"),
    ]


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def start(cmd: list[str], port: int, **kw: object) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw
    )  # type: ignore[call-overload]
    wait_port(port, proc)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def storescp(pki_dir: Path) -> Iterator[int]:
    """DCMTK storescp +tls (peer certificate required by default) on a loopback port."""
    exe = require_tool("storescp")
    port = free_port()
    proc = start(
        [
            exe,
            "+tls",
            str(pki_dir / f"{SRV}.key"),
            str(pki_dir / f"{SRV}.pem"),
            "+cf",
            str(pki_dir / CA),
            str(port),
        ],
        port,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        yield port
    finally:
        stop(proc)


# ---------------------------------------------------------------------- the CLI against DCMTK


def test_mtls_echo_against_dcmtk_shows_version_and_cipher(pki_dir: Path, storescp: int) -> None:
    proc = run_echo(*client_args(pki_dir), "-v", "localhost", str(storescp))
    assert proc.returncode == 0, proc.stderr
    assert "status 0x0000 (Success)" in proc.stdout
    assert "TLSv1.3" in proc.stderr and "TLS_AES" in proc.stderr  # version and cipher logged
    assert "CN=worklistmanager" in proc.stderr


def test_untrusted_client_certificate_is_exit_63(
    pki_dir: Path, other_ca_pki: Path, storescp: int
) -> None:
    args = [
        "--mtls",
        "-ca",
        str(pki_dir / CA),
        "-cert",
        str(other_ca_pki / f"{CLI}.pem"),
        "-key",
        str(other_ca_pki / f"{CLI}.key"),
    ]
    proc = run_echo(*args, "localhost", str(storescp))
    assert proc.returncode == 63
    # the server's alert ("unknown CA") or, when TLS 1.3 loses it, its close right after
    line = one_error_line(proc)
    assert "does not trust" in line or "did not accept our certificate" in line


def test_no_client_certificate_is_exit_63(pki_dir: Path, storescp: int) -> None:
    proc = run_echo("--tls", "-ca", str(pki_dir / CA), "localhost", str(storescp))
    assert proc.returncode == 63
    line = one_error_line(proc)
    assert "requires a client certificate" in line or "no client certificate" in line


def test_closed_port_is_exit_60(pki_dir: Path) -> None:
    proc = run_echo(*client_args(pki_dir), "127.0.0.1", str(free_port()))
    assert proc.returncode == 60
    assert "cannot reach" in one_error_line(proc)


def test_profile_ex_negotiates_tls12(pki_dir: Path) -> None:
    exe = require_tool("storescp")
    port = free_port()
    proc = start(
        [
            exe,
            "+tls",
            str(pki_dir / f"{SRV}.key"),
            str(pki_dir / f"{SRV}.pem"),
            "+cf",
            str(pki_dir / CA),
            "+pz",
            str(port),
        ],
        port,
    )
    try:
        out = run_echo(*client_args(pki_dir), "--tls-profile", "bcp195-ex", "localhost", str(port))
    finally:
        stop(proc)
    assert out.returncode == 0, out.stderr
    assert "TLSv1.2" in out.stdout and "ECDHE-ECDSA-AES" in out.stdout


def test_many_echoes_on_one_association(pki_dir: Path, tdwii_server) -> None:  # type: ignore[no-untyped-def]
    proc = run_echo(
        *client_args(pki_dir),
        "--count",
        "300",
        "--repeat",
        "2",
        "localhost",
        str(tdwii_server.port),
    )
    assert proc.returncode == 0, proc.stderr
    assert "600 sent" in proc.stdout


# ---------------------------------------------------------------------- openssl peers


def openssl_server(
    pki_root: Path, port: int, *extra: str, cert: Path | None = None, key: Path | None = None
) -> subprocess.Popen[bytes]:
    exe = require_tool("openssl")
    cmd = [
        exe,
        "s_server",
        "-accept",
        f"127.0.0.1:{port}",
        "-cert",
        str(cert or pki_root / f"{SRV}.pem"),
        "-key",
        str(key or pki_root / f"{SRV}.key"),
        *extra,
    ]
    return start(cmd, port)


def test_tls11_only_server_is_refused(pki_dir: Path) -> None:
    port = free_port()
    proc = openssl_server(pki_dir, port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    try:
        out = run_echo(*client_args(pki_dir), "127.0.0.1", str(port))
    finally:
        stop(proc)
    assert out.returncode == 63
    assert "protocol version refused" in one_error_line(out)


@pytest.fixture(scope="module")
def other_name_cert(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    ca_key = pki.load_key(pki_dir / "rootCA/rootCA.key")
    ca_cert = pki.load_cert(pki_dir / CA)
    key, cert = pki.make_leaf(ca_key, ca_cert, "other", sans=["other.example"], default_sans=False)
    d = tmp_path_factory.mktemp("othername")
    pki.write_key(d / "o.key", key)
    pki.write_cert(d / "o.pem", cert)
    return d / "o.pem", d / "o.key"


def test_hostname_mismatch_is_refused_and_can_be_turned_off(
    pki_dir: Path, other_name_cert: tuple[Path, Path]
) -> None:
    cert, key = other_name_cert
    port = free_port()
    proc = openssl_server(pki_dir, port, cert=cert, key=key)
    try:
        out = run_echo(*client_args(pki_dir), "localhost", str(port))
    finally:
        stop(proc)
    assert out.returncode == 63
    assert "host name mismatch" in one_error_line(out)
    port = free_port()
    proc = openssl_server(pki_dir, port, cert=cert, key=key)
    try:
        out = run_echo(
            *client_args(pki_dir),
            "--no-verify-hostname",
            "-to",
            "3",
            "-ta",
            "3",
            "localhost",
            str(port),
        )
    finally:
        stop(proc)
    assert out.returncode != 0  # s_server is no DICOM node, but the host name is not the issue
    assert "host name mismatch" not in out.stderr
    assert "host name check is off" in out.stderr


# ---------------------------------------------------------------------- own certificate checks


def _node(tmp: Path, pki_root: Path, **kw: object) -> list[str]:
    ca_key = pki.load_key(pki_root / "rootCA/rootCA.key")
    ca_cert = pki.load_cert(pki_root / CA)
    key, cert = pki.make_leaf(ca_key, ca_cert, "bad", **kw)  # type: ignore[arg-type]
    pki.write_key(tmp / "bad.key", key)
    pki.write_cert(tmp / "bad.pem", cert)
    return [
        "--mtls",
        "-ca",
        str(pki_root / CA),
        "-cert",
        str(tmp / "bad.pem"),
        "-key",
        str(tmp / "bad.key"),
    ]


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("expired", "expired"),
        ("future", "not valid before"),
        ("rsa1024", "too weak"),
        ("mismatch", "does not belong"),
    ],
)
def test_own_certificate_refused_before_connecting(
    pki_dir: Path, tmp_path: Path, kind: str, words: str
) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    if kind == "expired":
        args = _node(
            tmp_path,
            pki_dir,
            not_before=now - dt.timedelta(days=10),
            not_after=now - dt.timedelta(days=1),
        )
    elif kind == "future":
        args = _node(
            tmp_path,
            pki_dir,
            not_before=now + dt.timedelta(days=2),
            not_after=now + dt.timedelta(days=20),
        )
    elif kind == "rsa1024":
        args = _node(tmp_path, pki_dir, key=rsa.generate_private_key(65537, 1024))
    else:
        args = _node(tmp_path, pki_dir)
        args[-1] = str(pki_dir / f"{CLI}.key")  # someone else's key
    # a closed port: the error must be about the certificate, not the network
    out = run_echo(*args, "127.0.0.1", str(free_port()))
    assert out.returncode == 1
    assert words in one_error_line(out)


# ---------------------------------------------------------------------- handshake diagnosis


def _opts(root: Path, role: str, node: str, mode: str = "mtls", **kw: object) -> TlsOptions:
    fields: dict[str, object] = {
        "ca": (root / CA,),
        "cert": root / f"{node}.pem",
        "key": root / f"{node}.key",
    }
    fields.update(kw)
    return TlsOptions(role=role, mode=mode, **fields)  # type: ignore[arg-type]


class PyServer:
    """A one-shot Python TLS (or plain) server; records the server-side handshake error."""

    def __init__(self, ctx: ssl.SSLContext | None, behaviour: str = "handshake") -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.error: BaseException | None = None
        self.behaviour = behaviour
        self.ctx = ctx
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        conn, _ = self.sock.accept()
        try:
            if self.behaviour == "close":
                conn.close()
                return
            if self.behaviour == "silent":
                time.sleep(3)
                return
            if self.behaviour == "plain":  # not TLS: answer with an A-ABORT PDU
                conn.recv(1024)
                conn.sendall(b"\x07\x00\x00\x00\x00\x04\x00\x00\x02\x00")
                return
            assert self.ctx is not None
            conn.settimeout(5)
            tls_conn = self.ctx.wrap_socket(conn, server_side=True)
            tls_conn.recv(1)
        except (OSError, ssl.SSLError) as exc:
            self.error = exc
        finally:
            conn.close()

    def done(self) -> BaseException | None:
        self.thread.join(10)
        self.sock.close()
        return self.error


def _client(
    ctx: ssl.SSLContext, port: int, send: bytes = b"x", timeout: float = 5
) -> BaseException | None:
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=timeout) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as s,
        ):
            s.sendall(send)
            s.recv(1)
    except (OSError, ssl.SSLError) as exc:
        return exc
    return None


def test_words_no_client_certificate(pki_dir: Path) -> None:
    server = PyServer(build_server_context(_opts(pki_dir, "server", SRV)))
    _client(
        build_client_context(_opts(pki_dir, "client", CLI, mode="tls", cert=None, key=None)),
        server.port,
    )
    err = server.done()
    assert err is not None
    assert "no client certificate presented" in describe_handshake_error(err, side="server").reason


def test_words_untrusted_ca_both_sides(pki_dir: Path, other_ca_pki: Path) -> None:
    server = PyServer(build_server_context(_opts(other_ca_pki, "server", SRV)))
    err = _client(build_client_context(_opts(pki_dir, "client", CLI)), server.port)
    assert err is not None
    assert "untrusted CA" in describe_handshake_error(err, side="client").reason
    server_err = server.done()
    assert server_err is not None
    assert (
        "CA the peer does not trust" in describe_handshake_error(server_err, side="server").reason
    )


@pytest.mark.parametrize(("when", "words"), [("past", "has expired"), ("future", "not yet valid")])
def test_words_expired_and_not_yet_valid(
    pki_dir: Path, tmp_path: Path, when: str, words: str
) -> None:
    ca_key = pki.load_key(pki_dir / "rootCA/rootCA.key")
    ca_cert = pki.load_cert(pki_dir / CA)
    now = dt.datetime.now(dt.timezone.utc)
    span = (
        (now - dt.timedelta(days=9), now - dt.timedelta(days=1))
        if when == "past"
        else (now + dt.timedelta(days=1), now + dt.timedelta(days=9))
    )
    key, cert = pki.make_leaf(ca_key, ca_cert, "srv", not_before=span[0], not_after=span[1])
    pki.write_key(tmp_path / "s.key", key)
    pki.write_cert(tmp_path / "s.pem", cert)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(tmp_path / "s.pem", tmp_path / "s.key")
    server = PyServer(ctx)
    err = _client(build_client_context(_opts(pki_dir, "client", CLI)), server.port)
    server.done()
    assert err is not None
    assert words in describe_handshake_error(err, side="client").reason


def test_words_revoked(tmp_path: Path) -> None:
    pki.init_pki(tmp_path)
    pki.revoke(tmp_path, "worklistmanager")
    server = PyServer(build_server_context(_opts(tmp_path, "server", SRV, mode="tls")))
    opts = _opts(tmp_path, "client", CLI, crl=tmp_path / "rootCA/rootCA.crl.pem")
    err = _client(build_client_context(opts), server.port)
    server.done()
    assert err is not None
    assert "revoked" in describe_handshake_error(err, side="client").reason


def test_words_hostname_mismatch(pki_dir: Path, other_name_cert: tuple[Path, Path]) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(*other_name_cert)
    server = PyServer(ctx)
    err = _client(build_client_context(_opts(pki_dir, "client", CLI)), server.port)
    server.done()
    assert err is not None
    assert "host name mismatch" in describe_handshake_error(err, side="client").reason


def test_words_protocol_version_and_no_shared_cipher(pki_dir: Path) -> None:
    exe = require_tool("openssl")
    # server side: a TLS 1.1 client
    server = PyServer(build_server_context(_opts(pki_dir, "server", SRV, mode="tls")))
    subprocess.run(
        [
            exe,
            "s_client",
            "-connect",
            f"127.0.0.1:{server.port}",
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
        ],
        input=b"",
        capture_output=True,
        timeout=20,
    )
    err = server.done()
    assert err is not None
    assert "protocol version refused" in describe_handshake_error(err, side="server").reason
    # server side: a TLS 1.2 client offering only a CBC suite
    server = PyServer(build_server_context(_opts(pki_dir, "server", SRV, mode="tls")))
    subprocess.run(
        [
            exe,
            "s_client",
            "-connect",
            f"127.0.0.1:{server.port}",
            "-tls1_2",
            "-cipher",
            "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0",
        ],
        input=b"",
        capture_output=True,
        timeout=20,
    )
    err = server.done()
    assert err is not None
    assert "no shared cipher" in describe_handshake_error(err, side="server").reason


def test_words_plain_dicom_to_tls_and_tls_to_plain(pki_dir: Path) -> None:
    server = PyServer(build_server_context(_opts(pki_dir, "server", SRV)))
    with socket.create_connection(("127.0.0.1", server.port)) as s:
        s.sendall(b"\x01\x00\x00\x00\x00\xcd\x00\x01" + b"\x00" * 200)  # an A-ASSOCIATE-RQ
        time.sleep(0.2)
    err = server.done()
    assert err is not None
    assert "does not speak TLS" in describe_handshake_error(err, side="server").reason
    plain = PyServer(None, behaviour="plain")
    err = _client(build_client_context(_opts(pki_dir, "client", CLI)), plain.port)
    plain.done()
    assert err is not None
    assert "does not speak TLS" in describe_handshake_error(err, side="client").reason


def test_words_closed_during_handshake_and_timeout(pki_dir: Path) -> None:
    closing = PyServer(None, behaviour="close")
    err = _client(build_client_context(_opts(pki_dir, "client", CLI)), closing.port)
    closing.done()
    assert err is not None
    assert "closed during the TLS handshake" in describe_handshake_error(err).reason
    silent = PyServer(None, behaviour="silent")
    err = _client(build_client_context(_opts(pki_dir, "client", CLI)), silent.port, timeout=0.5)
    silent.done()
    assert err is not None
    assert "timed out" in describe_handshake_error(err).reason


def test_profiles_never_allow_tls11(pki_dir: Path) -> None:
    for profile in ("bcp195-rfc8996", "bcp195-nd", "bcp195-ex"):
        ctx = build_server_context(_opts(pki_dir, "server", SRV, profile=profile))
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        expected = ssl.TLSVersion.TLSv1_2 if profile == "bcp195-ex" else ssl.TLSVersion.TLSv1_3
        assert ctx.maximum_version == expected
        assert ctx.options & ssl.OP_NO_RENEGOTIATION
        assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    names = {
        c["name"]
        for c in build_server_context(_opts(pki_dir, "server", SRV)).get_ciphers()
        if c["protocol"] == "TLSv1.2"
    }
    assert names == {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    }
