"""TLS with `tdwii echo` and the TLS layer: every handshake failure reason produced by a real
handshake (DCMTK storescp, openssl s_server/s_client, Python ssl peers on loopback) with its
exit code and words, the profiles, and the checks of our own certificate.

Results, logs, AE titles and the exit codes 0/2/60/61/62/64: tests/test_echo.py.
Peers and helpers (storescp_peer, openssl_peer, run_echo_cli, ...): tests/conftest.py.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import (
    PKI_CA,
    PKI_CLIENT,
    PKI_SERVER,
    free_port,
    mtls_args,
    one_error_line,
    openssl_peer,
    require_tool,
    run_echo_cli,
    storescp_peer,
)
from tdwii_cli.pki.authority import init_pki, load_ca, revoke
from tdwii_cli.pki.certs import make_leaf, write_cert
from tdwii_cli.pki.keys import write_key
from tdwii_cli.tls.context import build_client_context, build_server_context
from tdwii_cli.tls.diagnosis import describe_handshake_error
from tdwii_cli.tls.options import TlsOptions

CA, SRV, CLI = PKI_CA, PKI_SERVER, PKI_CLIENT


@pytest.fixture(scope="module")
def other_name_cert(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A server certificate from the `pki_dir` CA for "other.example" only (no default SANs)."""
    ca_key, ca_cert = load_ca(pki_dir)
    key, cert = make_leaf(ca_key, ca_cert, "other", sans=["other.example"], default_sans=False)
    d = tmp_path_factory.mktemp("othername")
    write_key(d / "o.key", key)
    write_cert(d / "o.pem", cert)
    return d / "o.pem", d / "o.key"


@pytest.fixture(scope="module")
def revoked_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PKI whose server certificate (worklistmanager) is revoked in rootCA/rootCA.crl.pem."""
    directory = tmp_path_factory.mktemp("revoked") / "certs"
    init_pki(directory)
    revoke(directory, "worklistmanager")
    return directory


# ------------------------------------------------------- refusals seen by `tdwii echo`


def test_untrusted_client_certificate_is_exit_63(
    pki_dir: Path, other_ca_pki: Path, dcmtk_tls_peer: int
) -> None:
    args = mtls_args(other_ca_pki, ca=pki_dir / CA)  # we trust the server; it does not trust us
    proc = run_echo_cli(*args, "localhost", str(dcmtk_tls_peer))
    assert proc.returncode == 63
    # the server's alert ("unknown CA") or, when TLS 1.3 loses it, its close right after
    line = one_error_line(proc)
    assert "does not trust" in line or "did not accept our certificate" in line


def test_no_client_certificate_is_exit_63(pki_dir: Path, dcmtk_tls_peer: int) -> None:
    proc = run_echo_cli("--tls", "-ca", str(pki_dir / CA), "localhost", str(dcmtk_tls_peer))
    assert proc.returncode == 63
    line = one_error_line(proc)
    assert "requires a client certificate" in line or "no client certificate" in line


def test_tls11_only_server_is_refused(pki_dir: Path) -> None:
    cert, key = pki_dir / f"{SRV}.pem", pki_dir / f"{SRV}.key"
    with openssl_peer(cert, key, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0") as port:
        proc = run_echo_cli(*mtls_args(pki_dir), "127.0.0.1", str(port))
    assert proc.returncode == 63
    assert "protocol version refused" in one_error_line(proc)


def test_hostname_mismatch_is_refused_and_can_be_turned_off(
    pki_dir: Path, other_name_cert: tuple[Path, Path]
) -> None:
    """A certificate for another name: refused (63) with the check on; with
    --no-verify-hostname the TLS part passes and s_server (no DICOM node) never answers the
    A-ASSOCIATE-RQ: exit 62 "did not answer in time" (it was 63, blamed on our certificate)."""
    with openssl_peer(*other_name_cert) as port:
        checked = run_echo_cli(*mtls_args(pki_dir), "-ta", "1", "127.0.0.1", str(port))
        unchecked = run_echo_cli(
            *mtls_args(pki_dir), "--no-verify-hostname", "-ta", "1", "127.0.0.1", str(port)
        )
    assert checked.returncode == 63
    assert "host name mismatch" in one_error_line(checked)
    assert unchecked.returncode == 62, unchecked.stderr
    assert "did not answer in time" in unchecked.stderr
    assert "host name check is off" in unchecked.stderr
    assert "host name mismatch" not in unchecked.stderr
    assert "TLS handshake" not in unchecked.stderr


@pytest.mark.parametrize(
    ("when", "words"), [("past", "certificate has expired"), ("future", "not yet valid")]
)
def test_expired_or_not_yet_valid_server_certificate_is_63(
    pki_dir: Path, tmp_path: Path, when: str, words: str
) -> None:
    ca_key, ca_cert = load_ca(pki_dir)
    now = dt.datetime.now(dt.timezone.utc)
    if when == "past":
        span = (now - dt.timedelta(days=60), now - dt.timedelta(days=2))
    else:
        span = (now + dt.timedelta(days=1), now + dt.timedelta(days=9))
    key, cert = make_leaf(ca_key, ca_cert, "oldserver", not_before=span[0], not_after=span[1])
    write_key(tmp_path / "old.key", key)
    write_cert(tmp_path / "old.pem", cert)
    (tmp_path / "rootCA").mkdir()
    shutil.copyfile(pki_dir / CA, tmp_path / CA)
    with storescp_peer(tmp_path, node="old") as port:
        proc = run_echo_cli(*mtls_args(pki_dir), "localhost", str(port))
    assert proc.returncode == 63
    assert words in one_error_line(proc)


def test_revoked_server_refused_with_crl(revoked_pki: Path) -> None:
    crl = str(revoked_pki / "rootCA/rootCA.crl.pem")
    with storescp_peer(revoked_pki) as port:
        refused = run_echo_cli(*mtls_args(revoked_pki), "--crl", crl, "localhost", str(port))
        accepted = run_echo_cli(*mtls_args(revoked_pki), "localhost", str(port))
    assert refused.returncode == 63
    assert "certificate is revoked" in one_error_line(refused)
    assert accepted.returncode == 0  # the CRL made the difference


def test_plain_dicom_to_a_tls_port_is_62(dcmtk_tls_peer: int) -> None:
    proc = run_echo_cli("localhost", str(dcmtk_tls_peer))
    assert proc.returncode == 62
    line = one_error_line(proc)
    assert "closed the connection before answering" in line and "expect TLS" in line


def test_tls_to_a_plain_port_is_63(pki_dir: Path, dcmtk_plain_peer: int) -> None:
    proc = run_echo_cli(*mtls_args(pki_dir), "localhost", str(dcmtk_plain_peer))
    assert proc.returncode == 63
    line = one_error_line(proc)
    assert "closed during the TLS handshake" in line or "does not speak TLS" in line
    assert "TLS on this port" in line or "plain" in line


def test_handshake_timeout_is_63_within_the_connect_timeout(pki_dir: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        start = time.monotonic()
        proc = run_echo_cli(
            *mtls_args(pki_dir), "-to", "0.5", "localhost", str(silent.getsockname()[1])
        )
        elapsed = time.monotonic() - start
    assert proc.returncode == 63
    assert "TLS handshake timed out" in one_error_line(proc)
    assert elapsed < 8


# ---------------------------------------------------------------------- own certificate checks


def _own_node(tmp: Path, pki_root: Path, **kw: object) -> list[str]:
    """`--mtls` options with a fresh client certificate "bad" made with `make_leaf(**kw)`."""
    ca_key, ca_cert = load_ca(pki_root)
    key, cert = make_leaf(ca_key, ca_cert, "bad", **kw)  # type: ignore[arg-type]
    write_key(tmp / "bad.key", key)
    write_cert(tmp / "bad.pem", cert)
    return mtls_args(tmp, node="bad", ca=pki_root / CA)


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
        span = {"not_before": now - dt.timedelta(days=10), "not_after": now - dt.timedelta(days=1)}
        args = _own_node(tmp_path, pki_dir, **span)
    elif kind == "future":
        span = {"not_before": now + dt.timedelta(days=2), "not_after": now + dt.timedelta(days=20)}
        args = _own_node(tmp_path, pki_dir, **span)
    elif kind == "rsa1024":
        args = _own_node(tmp_path, pki_dir, key=rsa.generate_private_key(65537, 1024))
    else:
        args = _own_node(tmp_path, pki_dir)
        args[-1] = str(pki_dir / f"{CLI}.key")  # someone else's key
    # a closed port: the error must be about the certificate, not the network
    proc = run_echo_cli(*args, "127.0.0.1", str(free_port()))
    assert proc.returncode == 1
    assert words in one_error_line(proc)


# ---------------------------------------------------------------------- handshake words
# describe_handshake_error for the sides and peers the CLI tests above do not reach


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


@pytest.mark.parametrize(
    ("client", "words"),
    [
        (["-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0"], "protocol version refused"),
        (["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-SHA:@SECLEVEL=0"], "no shared cipher"),
    ],
    ids=["tls1.1-client", "cbc-only-client"],
)
def test_words_protocol_version_and_no_shared_cipher(
    pki_dir: Path, client: list[str], words: str
) -> None:
    """Server side: an openssl s_client speaking TLS 1.1, or TLS 1.2 with only a CBC suite."""
    exe = require_tool("openssl")
    server = PyServer(build_server_context(_opts(pki_dir, "server", SRV, mode="tls")))
    cmd = [exe, "s_client", "-connect", f"127.0.0.1:{server.port}", *client]
    subprocess.run(cmd, input=b"", capture_output=True, timeout=20)
    err = server.done()
    assert err is not None
    assert words in describe_handshake_error(err, side="server").reason


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


def test_words_closed_during_handshake(pki_dir: Path) -> None:
    # (a handshake that times out: test_handshake_timeout_is_63_within_the_connect_timeout)
    closing = PyServer(None, behaviour="close")
    err = _client(build_client_context(_opts(pki_dir, "client", CLI)), closing.port)
    closing.done()
    assert err is not None
    assert "closed during the TLS handshake" in describe_handshake_error(err).reason


# ---------------------------------------------------------------------- profiles


def test_profile_ex_negotiates_tls12(pki_dir: Path) -> None:
    with storescp_peer(pki_dir, "+pz") as port:
        proc = run_echo_cli(
            *mtls_args(pki_dir), "--tls-profile", "bcp195-ex", "localhost", str(port)
        )
    assert proc.returncode == 0, proc.stderr
    assert "TLSv1.2" in proc.stdout and "ECDHE-ECDSA-AES" in proc.stdout


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
