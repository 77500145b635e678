"""tdwii_cli.tls: profiles, contexts, own-certificate checks and handshake diagnosis.

Every failure reason is produced by a real handshake over loopback (Python `ssl`
on both ends, or openssl s_server/s_client as the peer) and then put into words
by `describe_handshake_error`, from the side that saw it.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import require_tool, wait_port
from tdwii_cli.cli.hints import hint_for
from tdwii_cli.errors import TdwiiError
from tdwii_cli.net.errors import HandshakeFailed
from tdwii_cli.net.sockets import set_nodelay
from tdwii_cli.pki.authority import init_pki, load_ca, revoke
from tdwii_cli.pki.certs import key_problem, load_cert, make_leaf, write_cert
from tdwii_cli.pki.keys import KeySpec, write_key
from tdwii_cli.tls.context import PROFILES, build_client_context, build_server_context
from tdwii_cli.tls.diagnosis import describe_handshake_error
from tdwii_cli.tls.options import TlsOptions
from tdwii_cli.tls.owncert import _leaf_facts, check_own_certificate

SERVER = "servers/worklistmanager/worklistmanager"
CLIENT = "clients/workitemcreator/workitemcreator"
# An A-ASSOCIATE-RQ starts with PDU type 0x01 (what a plain DICOM client sends first).
ASSOCIATE_RQ_START = bytes([0x01, 0x00, 0x00, 0x00, 0x00, 0xCD, 0x00, 0x01, 0x00, 0x00])


# ---------------------------------------------------------------------- helpers


def opts(
    directory: Path,
    role: str,
    *,
    mode: str = "mtls",
    node: str | None = None,
    ca: Path | None = None,
    profile: str = "bcp195-rfc8996",
    crl: Path | None = None,
    verify_hostname: bool = True,
    password_file: Path | None = None,
) -> TlsOptions:
    """TlsOptions as `tlsoptions.resolve` would build them, for `directory`'s PKI."""
    node = node or (SERVER if role == "server" else CLIENT)
    with_cert = role == "server" or mode == "mtls"
    return TlsOptions(
        role=role,  # type: ignore[arg-type]
        mode=mode,  # type: ignore[arg-type]
        ca=(ca or directory / "rootCA/rootCA.pem",),
        cert=directory / f"{node}.pem" if with_cert else None,
        key=directory / f"{node}.key" if with_cert else None,
        key_password_file=password_file,
        profile=profile,
        crl=crl,
        verify_hostname=verify_hostname,
    )


@dataclass
class Outcome:
    """What each end of one loopback handshake saw."""

    server_error: BaseException | None = None
    client_error: BaseException | None = None
    server_sock_info: tuple[str | None, str | None, str | None] | None = None
    client_info: tuple[str | None, str | None, str | None] | None = None


def handshake(
    server_ctx: ssl.SSLContext,
    client_ctx: ssl.SSLContext,
    server_hostname: str = "localhost",
    timeout: float = 5.0,
) -> Outcome:
    """One TLS connection over loopback; the client reads once after the handshake so that a
    TLS 1.3 server's verdict on the client certificate (sent after the client's Finished)
    reaches it."""
    out = Outcome()
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(timeout)
    port = listener.getsockname()[1]

    def serve() -> None:
        try:
            conn, _ = listener.accept()
        except OSError as exc:
            out.server_error = exc
            return
        conn.settimeout(timeout)
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                out.server_sock_info = (s.version(), s.cipher()[0], s.selected_alpn_protocol())
                s.sendall(b"ok")
                s.recv(2)
        except (OSError, ssl.SSLError) as exc:
            if out.server_sock_info is None:
                out.server_error = exc
        finally:
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        try:
            with client_ctx.wrap_socket(raw, server_hostname=server_hostname) as c:
                info = (c.version(), c.cipher()[0], c.selected_alpn_protocol())
                if c.recv(2) != b"ok":
                    raise ConnectionResetError("closed after the handshake")
                out.client_info = info
                c.sendall(b"ok")
        except (OSError, ssl.SSLError) as exc:
            out.client_error = exc
        finally:
            raw.close()
    finally:
        thread.join(timeout + 2)
        listener.close()
    return out


def words(exc: BaseException | None, side: str) -> str:
    """What the side that saw `exc` says: the reason, then the server log's advice or the
    client command line's hint."""
    assert exc is not None, f"the {side} saw no error"
    failure = describe_handshake_error(exc, side=side)  # type: ignore[arg-type]
    assert failure.reason and failure.advice
    if side == "client":
        return f"{failure.reason} | {hint_for(HandshakeFailed('peer', failure))}".lower()
    return f"{failure.reason} | {failure.advice}".lower()


def leaf_dir(
    tmp_path: Path,
    ca_dir: Path,
    name: str,
    **kwargs: object,
) -> Path:
    """Write a leaf signed by `ca_dir`'s CA to tmp_path/NAME.{pem,key}; return the pem path."""
    ca_key, ca_cert = load_ca(ca_dir)
    key, cert = make_leaf(ca_key, ca_cert, name, **kwargs)  # type: ignore[arg-type]
    write_key(tmp_path / f"{name}.key", key)
    write_cert(tmp_path / f"{name}.pem", cert)
    return tmp_path / f"{name}.pem"


@pytest.fixture(scope="module")
def contexts(pki_dir: Path) -> dict[str, ssl.SSLContext]:
    return {
        "server_mtls": build_server_context(opts(pki_dir, "server")),
        "server_tls": build_server_context(opts(pki_dir, "server", mode="tls")),
        "client_mtls": build_client_context(opts(pki_dir, "client")),
        "client_tls": build_client_context(opts(pki_dir, "client", mode="tls")),
    }


# ---------------------------------------------------------------------- profiles and contexts


def _tls12_ciphers(ctx: ssl.SSLContext) -> set[str]:
    return {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}


def test_profiles_follow_ps3_15_annex_b(pki_dir: Path) -> None:
    rfc9325 = {
        "ECDHE-ECDSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-ECDSA-AES256-GCM-SHA384",
        "ECDHE-RSA-AES256-GCM-SHA384",
    }
    nd = {
        "ECDHE-RSA-AES128-GCM-SHA256",
        "ECDHE-RSA-AES256-GCM-SHA384",
        "DHE-RSA-AES128-GCM-SHA256",
        "DHE-RSA-AES256-GCM-SHA384",
    }
    expected = {
        "bcp195-rfc8996": (rfc9325, ssl.TLSVersion.TLSv1_3),
        "bcp195-nd": (nd, ssl.TLSVersion.TLSv1_3),
        "bcp195-ex": (
            nd | {"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"},
            ssl.TLSVersion.TLSv1_2,
        ),
    }
    assert set(PROFILES) == set(expected)
    for name, (suites, maximum) in expected.items():
        for role in ("server", "client"):
            builder = build_server_context if role == "server" else build_client_context
            ctx = builder(opts(pki_dir, role, profile=name))
            assert _tls12_ciphers(ctx) == suites, (name, role)
            assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
            assert ctx.maximum_version == maximum
            assert ctx.options & ssl.OP_NO_RENEGOTIATION
            assert ctx.options & ssl.OP_NO_COMPRESSION


def test_server_and_client_context_settings(pki_dir: Path) -> None:
    server = build_server_context(opts(pki_dir, "server"))
    assert server.verify_mode == ssl.CERT_REQUIRED
    assert server.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert build_server_context(opts(pki_dir, "server", mode="tls")).verify_mode == (ssl.CERT_NONE)
    client = build_client_context(opts(pki_dir, "client"))
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert client.protocol == ssl.PROTOCOL_TLS_CLIENT


def test_no_verify_hostname_warns(pki_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("tdwii").propagate = True
    with caplog.at_level(logging.WARNING, logger="tdwii.tls"):
        ctx = build_client_context(opts(pki_dir, "client", verify_hostname=False))
    assert not ctx.check_hostname
    assert "host name check is off" in caplog.text


def test_mtls_handshake_tls13_with_alpn_dicom(contexts: dict[str, ssl.SSLContext]) -> None:
    out = handshake(contexts["server_mtls"], contexts["client_mtls"])
    assert out.client_error is None and out.server_error is None
    assert out.client_info == ("TLSv1.3", out.client_info[1], "dicom")
    assert out.client_info[1] in ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256")


@pytest.mark.parametrize("offer", [None, ["http/1.1"]])
def test_server_accepts_clients_without_dicom_alpn(
    pki_dir: Path, contexts: dict[str, ssl.SSLContext], offer: list[str] | None
) -> None:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(pki_dir / "rootCA/rootCA.pem")
    client.load_cert_chain(pki_dir / f"{CLIENT}.pem", pki_dir / f"{CLIENT}.key")
    if offer:
        client.set_alpn_protocols(offer)
    out = handshake(contexts["server_mtls"], client)
    assert out.client_error is None and out.server_error is None
    assert out.server_sock_info is not None and out.server_sock_info[2] is None


def test_bcp195_ex_negotiates_tls12_ecdsa_gcm(pki_dir: Path) -> None:
    server = build_server_context(opts(pki_dir, "server"))
    client = build_client_context(opts(pki_dir, "client", profile="bcp195-ex"))
    out = handshake(server, client)
    assert out.client_error is None, out.client_error
    assert out.client_info is not None
    assert out.client_info[:2] == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")


def test_server_prefers_its_own_cipher_order(pki_dir: Path) -> None:
    server = build_server_context(opts(pki_dir, "server", profile="bcp195-ex"))
    client = build_client_context(opts(pki_dir, "client", profile="bcp195-ex"))
    client.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
    out = handshake(server, client)
    assert out.client_info is not None
    # the server's list has AES-128 before AES-256; server preference wins over the client's
    assert out.client_info[1] == "ECDHE-ECDSA-AES128-GCM-SHA256"


# ---------------------------------------------------------------------- failures, both sides


def test_no_client_certificate(contexts: dict[str, ssl.SSLContext]) -> None:
    out = handshake(contexts["server_mtls"], contexts["client_tls"])
    assert "no client certificate presented" in words(out.server_error, "server")
    client = words(out.client_error, "client")
    assert "requires a client certificate" in client and "--mtls" in client


def test_client_certificate_from_untrusted_ca(
    pki_dir: Path, other_ca_pki: Path, contexts: dict[str, ssl.SSLContext]
) -> None:
    client = build_client_context(opts(other_ca_pki, "client", ca=pki_dir / "rootCA/rootCA.pem"))
    out = handshake(contexts["server_mtls"], client)
    assert "untrusted ca" in words(out.server_error, "server")
    assert "ca the peer does not trust" in words(out.client_error, "client")


def test_server_certificate_from_untrusted_ca(pki_dir: Path, other_ca_pki: Path) -> None:
    server = build_server_context(opts(other_ca_pki, "server", ca=pki_dir / "rootCA/rootCA.pem"))
    client = build_client_context(opts(pki_dir, "client"))
    out = handshake(server, client)
    assert "untrusted ca" in words(out.client_error, "client")
    assert "--ca" in words(out.client_error, "client")
    assert "ca the peer does not trust" in words(out.server_error, "server")


def _server_with(tmp_path: Path, pki_dir: Path, name: str, **kwargs: object) -> ssl.SSLContext:
    pem = leaf_dir(tmp_path, pki_dir, name, **kwargs)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)  # no own-certificate checks for this peer
    ctx.load_cert_chain(pem, pem.with_suffix(".key"))
    return ctx


def test_expired_server_certificate(tmp_path: Path, pki_dir: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    server = _server_with(
        tmp_path,
        pki_dir,
        "old",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    out = handshake(server, build_client_context(opts(pki_dir, "client")))
    assert "has expired" in words(out.client_error, "client")
    assert "expired" in words(out.server_error, "server")  # the client's alert


def test_not_yet_valid_server_certificate(tmp_path: Path, pki_dir: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    server = _server_with(
        tmp_path,
        pki_dir,
        "future",
        not_before=now + dt.timedelta(days=2),
        not_after=now + dt.timedelta(days=30),
    )
    out = handshake(server, build_client_context(opts(pki_dir, "client")))
    assert "not yet valid" in words(out.client_error, "client")


def test_hostname_mismatch(tmp_path: Path, pki_dir: Path) -> None:
    server = _server_with(tmp_path, pki_dir, "other", sans=["other.example"], default_sans=False)
    out = handshake(server, build_client_context(opts(pki_dir, "client")))
    text = words(out.client_error, "client")
    assert "host name mismatch" in text and "--no-verify-hostname" in text
    out = handshake(server, build_client_context(opts(pki_dir, "client")), "127.0.0.1")
    assert "host name mismatch" in words(out.client_error, "client")
    unchecked = build_client_context(opts(pki_dir, "client", verify_hostname=False))
    assert handshake(server, unchecked).client_error is None


@pytest.fixture()
def revoked_pki(tmp_path: Path) -> Path:
    directory = tmp_path / "certs"
    init_pki(directory)
    revoke(directory, "workitemcreator")
    revoke(directory, "worklistmanager")
    return directory


def test_revoked_client_refused_by_server_with_crl(revoked_pki: Path) -> None:
    crl = revoked_pki / "rootCA/rootCA.crl.pem"
    server = build_server_context(opts(revoked_pki, "server", crl=crl))
    out = handshake(server, build_client_context(opts(revoked_pki, "client")))
    assert "revoked" in words(out.server_error, "server")
    assert "says our certificate is revoked" in words(out.client_error, "client")
    # without the CRL the same certificates work: the CRL made the difference
    plain = handshake(
        build_server_context(opts(revoked_pki, "server")),
        build_client_context(opts(revoked_pki, "client")),
    )
    assert plain.client_error is None and plain.server_error is None


def test_revoked_server_refused_by_client_with_crl(revoked_pki: Path) -> None:
    crl = revoked_pki / "rootCA/rootCA.crl.pem"
    client = build_client_context(opts(revoked_pki, "client", crl=crl))
    out = handshake(build_server_context(opts(revoked_pki, "server")), client)
    assert "certificate is revoked" in words(out.client_error, "client")


def test_no_shared_cipher(pki_dir: Path, contexts: dict[str, ssl.SSLContext]) -> None:
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(pki_dir / "rootCA/rootCA.pem")
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305")  # CBC, ChaCha
    out = handshake(contexts["server_tls"], client)
    assert "no shared cipher" in words(out.server_error, "server")
    assert "no shared cipher" in words(out.client_error, "client")


def test_profile_without_suites_for_an_ec_server(pki_dir: Path) -> None:
    """bcp195-nd has RSA suites only in TLS 1.2: an EC server and a TLS 1.2 client share none."""
    server = build_server_context(opts(pki_dir, "server", profile="bcp195-nd"))
    client = build_client_context(opts(pki_dir, "client", profile="bcp195-ex"))
    out = handshake(server, client)
    assert "no shared cipher" in words(out.client_error, "client")


def _openssl_s_client(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    openssl = require_tool("openssl")
    return subprocess.run(
        [openssl, "s_client", "-connect", f"127.0.0.1:{port}", *args],
        input="",
        capture_output=True,
        text=True,
        timeout=20,
    )


def _server_thread(ctx: ssl.SSLContext, timeout: float = 5.0) -> tuple[int, dict, threading.Thread]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(timeout)
    seen: dict[str, BaseException | None] = {}

    def run() -> None:
        try:
            conn, _ = listener.accept()
            conn.settimeout(timeout)
            try:
                with ctx.wrap_socket(conn, server_side=True):
                    seen["error"] = None
            except (OSError, ssl.SSLError) as exc:
                seen["error"] = exc
            finally:
                conn.close()
        finally:
            listener.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return listener.getsockname()[1], seen, thread


def test_server_refuses_a_tls11_client(contexts: dict[str, ssl.SSLContext]) -> None:
    port, seen, thread = _server_thread(contexts["server_tls"])
    result = _openssl_s_client(port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    thread.join(10)
    assert "protocol version refused" in words(seen["error"], "server")
    assert result.returncode != 0
    assert "protocol version" in result.stderr.lower()  # the alert openssl received


def test_server_refuses_a_cbc_only_client(contexts: dict[str, ssl.SSLContext]) -> None:
    port, seen, thread = _server_thread(contexts["server_tls"])
    _openssl_s_client(port, "-tls1_2", "-cipher", "AES128-SHA:@SECLEVEL=0")
    thread.join(10)
    assert "no shared cipher" in words(seen["error"], "server")


@pytest.fixture()
def tls11_server(pki_dir: Path) -> Iterator[int]:
    """openssl s_server offering TLS 1.1 only (at security level 0)."""
    openssl = require_tool("openssl")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()
    proc = subprocess.Popen(
        [
            openssl,
            "s_server",
            "-accept",
            f"127.0.0.1:{port}",
            "-tls1_1",
            "-cipher",
            "DEFAULT:@SECLEVEL=0",
            "-cert",
            str(pki_dir / f"{SERVER}.pem"),
            "-key",
            str(pki_dir / f"{SERVER}.key"),
            "-quiet",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_port(port, proc)
        yield port
    finally:
        proc.kill()
        proc.wait()


def test_client_refuses_a_tls11_server(tls11_server: int, pki_dir: Path) -> None:
    client = build_client_context(opts(pki_dir, "client"))
    raw = socket.create_connection(("127.0.0.1", tls11_server), timeout=5)
    with pytest.raises(ssl.SSLError) as info:
        client.wrap_socket(raw, server_hostname="localhost")
    raw.close()
    assert "protocol version refused" in words(info.value, "client")


def test_plain_dicom_to_a_tls_port(contexts: dict[str, ssl.SSLContext]) -> None:
    port, seen, thread = _server_thread(contexts["server_mtls"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(ASSOCIATE_RQ_START + bytes(200))
        thread.join(10)
    assert "does not speak tls" in words(seen["error"], "server")
    assert "plain dicom" in words(seen["error"], "server")


def test_tls_to_a_plain_dicom_port(contexts: dict[str, ssl.SSLContext]) -> None:
    """A plain DICOM node answers our ClientHello with an A-ABORT (PDU type 0x07)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def plain_peer() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)
            conn.sendall(bytes([0x07, 0, 0, 0, 0, 4, 0, 0, 0, 0]))
            time.sleep(0.2)
        listener.close()

    thread = threading.Thread(target=plain_peer, daemon=True)
    thread.start()
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with pytest.raises(ssl.SSLError) as info:
        contexts["client_mtls"].wrap_socket(raw, server_hostname="localhost")
    raw.close()
    thread.join(5)
    assert "does not speak tls" in words(info.value, "client")


def test_closed_during_handshake(contexts: dict[str, ssl.SSLContext]) -> None:
    # the server side: a client that sends half a ClientHello and hangs up
    port, seen, thread = _server_thread(contexts["server_mtls"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]))
    thread.join(10)
    assert "closed during the tls handshake" in words(seen["error"], "server")
    # the client side: a server that accepts and closes at once
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def closer() -> None:
        conn, _ = listener.accept()
        conn.recv(10)
        conn.close()
        listener.close()

    thread = threading.Thread(target=closer, daemon=True)
    thread.start()
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    with pytest.raises(OSError) as info:
        contexts["client_mtls"].wrap_socket(raw, server_hostname="localhost")
    raw.close()
    thread.join(5)
    assert "closed during the tls handshake" in words(info.value, "client")


def test_handshake_timeout(contexts: dict[str, ssl.SSLContext]) -> None:
    # the client side: a listener that never answers
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        raw = socket.create_connection(listener.getsockname()[:2], timeout=0.3)
        start = time.monotonic()
        with pytest.raises(OSError) as info:
            contexts["client_mtls"].wrap_socket(raw, server_hostname="localhost")
        raw.close()
        assert time.monotonic() - start < 2
        assert "timed out" in words(info.value, "client")
    finally:
        listener.close()
    # the server side: a client that connects and says nothing
    port, seen, thread = _server_thread(contexts["server_mtls"], timeout=0.3)
    with socket.create_connection(("127.0.0.1", port), timeout=5):
        thread.join(5)
    assert "timed out" in words(seen["error"], "server")


def test_unknown_errors_keep_the_openssl_words() -> None:
    exc = ssl.SSLError(1, "[SSL: SOMETHING_NEW] something new (_ssl.c:1000)")
    failure = describe_handshake_error(exc, side="client")
    assert "something new" in failure.reason.lower()
    assert "-d" in hint_for(HandshakeFailed("peer", failure))  # the command line's hint
    assert "-d" not in failure.advice  # the server's log names no option


def test_handshake_error_is_exit_63_one_line(contexts: dict[str, ssl.SSLContext]) -> None:
    out = handshake(contexts["server_mtls"], contexts["client_tls"])
    assert out.client_error is not None
    err = HandshakeFailed("127.0.0.1:2762", describe_handshake_error(out.client_error))
    assert err.exit_code == 63
    assert err.message.startswith("TLS handshake with 127.0.0.1:2762 failed: ")
    assert "\n" not in err.message


# ---------------------------------------------------------------------- our own certificate


def _own(tmp_path: Path, pki_dir: Path, name: str, **kwargs: object) -> tuple[Path, Path]:
    pem = leaf_dir(tmp_path, pki_dir, name, **kwargs)
    return pem, pem.with_suffix(".key")


def test_own_certificate_expired(tmp_path: Path, pki_dir: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    cert, key = _own(
        tmp_path,
        pki_dir,
        "old",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    with pytest.raises(TdwiiError, match="expired on"):
        check_own_certificate(cert, key, None)


def test_own_certificate_not_yet_valid(tmp_path: Path, pki_dir: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    cert, key = _own(
        tmp_path,
        pki_dir,
        "soon",
        not_before=now + dt.timedelta(days=1),
        not_after=now + dt.timedelta(days=90),
    )
    with pytest.raises(TdwiiError, match="not valid before"):
        check_own_certificate(cert, key, None)


def test_own_certificate_rsa_1024_refused(tmp_path: Path, pki_dir: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    cert, key = _own(tmp_path, pki_dir, "weak", key=weak)
    with pytest.raises(TdwiiError, match="too weak") as info:
        check_own_certificate(cert, key, None)
    assert "1024" in info.value.message


def test_own_certificate_ec_under_256_refused(tmp_path: Path, pki_dir: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    weak = ec.generate_private_key(ec.SECP224R1())
    cert, key = _own(tmp_path, pki_dir, "weakec", key=weak)
    with pytest.raises(TdwiiError, match="too weak"):
        check_own_certificate(cert, key, None)


def test_own_certificate_rsa_2048_accepted(tmp_path: Path, pki_dir: Path) -> None:
    cert, key = _own(tmp_path, pki_dir, "rsa", key_spec=KeySpec("rsa", 2048))
    check_own_certificate(cert, key, None)  # no exception


def test_own_key_not_matching(tmp_path: Path, pki_dir: Path) -> None:
    cert, _ = _own(tmp_path, pki_dir, "one")
    _, other_key = _own(tmp_path, pki_dir, "two")
    with pytest.raises(TdwiiError, match="does not belong to certificate"):
        check_own_certificate(cert, other_key, None)
    # the same refusal when building a context, before any connection
    options = TlsOptions(
        role="client", mode="mtls", ca=(pki_dir / "rootCA/rootCA.pem",), cert=cert, key=other_key
    )
    with pytest.raises(TdwiiError, match="does not belong"):
        build_client_context(options)


def test_own_certificate_expiring_soon_warns(
    tmp_path: Path, pki_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    cert, key = _own(
        tmp_path, pki_dir, "short", not_before=now, not_after=now + dt.timedelta(days=10)
    )
    logging.getLogger("tdwii").propagate = True
    with caplog.at_level(logging.WARNING, logger="tdwii.tls"):
        check_own_certificate(cert, key, None)
    assert "expires in 9 days" in caplog.text or "expires in 10 days" in caplog.text


def test_wrong_key_password_one_line_without_the_password(tmp_path: Path, pki_dir: Path) -> None:
    ca_key, ca_cert = load_ca(pki_dir)
    key, cert = make_leaf(ca_key, ca_cert, "locked")
    write_key(tmp_path / "locked.key", key, password=b"right-horse-battery")
    write_cert(tmp_path / "locked.pem", cert)
    (tmp_path / "pw").write_text("Wr0ngSecretXYZ\n")
    with pytest.raises(TdwiiError) as info:
        check_own_certificate(tmp_path / "locked.pem", tmp_path / "locked.key", b"Wr0ngSecretXYZ")
    text = info.value.message + info.value.hint
    assert "password" in text.lower()
    assert "Wr0ngSecretXYZ" not in text and "right-horse" not in text
    assert "\n" not in text
    # and the right password works through the option's file
    (tmp_path / "pw").write_text("right-horse-battery\n")
    options = TlsOptions(
        role="client",
        mode="mtls",
        ca=(pki_dir / "rootCA/rootCA.pem",),
        cert=tmp_path / "locked.pem",
        key=tmp_path / "locked.key",
        key_password_file=tmp_path / "pw",
    )
    assert build_client_context(options).verify_mode == ssl.CERT_REQUIRED


def test_set_nodelay() -> None:
    with socket.socket() as sock:
        set_nodelay(sock)
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    closed = socket.socket()
    closed.close()
    set_nodelay(closed)  # no exception on a closed socket


@pytest.mark.parametrize(
    "key",
    [
        "ec256",
        "ec384",
        "ec521",
        "ec224",
        "rsa1024",
        "rsa2048",
        "rsa3072",
    ],
)
def test_quick_certificate_reader_agrees_with_cryptography(
    tmp_path: Path, pki_dir: Path, key: str
) -> None:
    """The DER reader behind the own-certificate check (no `cryptography` import on the
    one-shot path) sees the same dates and key weakness as `cryptography` does."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    curves = {"ec256": ec.SECP256R1(), "ec384": ec.SECP384R1(), "ec521": ec.SECP521R1()}
    curves["ec224"] = ec.SECP224R1()
    private = (
        ec.generate_private_key(curves[key])
        if key.startswith("ec")
        else rsa.generate_private_key(public_exponent=65537, key_size=int(key[3:]))
    )
    cert, _ = _own(tmp_path, pki_dir, key, key=private)
    facts = _leaf_facts(cert.read_bytes())
    assert facts is not None  # handled by the quick reader, not the fallback
    loaded = load_cert(cert)
    assert facts[0] == loaded.not_valid_before_utc
    assert facts[1] == loaded.not_valid_after_utc
    assert facts[2] == (key_problem(loaded) or "")
    assert bool(facts[2]) == (key in ("ec224", "rsa1024"))


def test_encrypted_key_without_password(tmp_path: Path, pki_dir: Path) -> None:
    ca_key, ca_cert = load_ca(pki_dir)
    key, cert = make_leaf(ca_key, ca_cert, "locked")
    write_key(tmp_path / "locked.key", key, password=b"pw-123456")
    write_cert(tmp_path / "locked.pem", cert)
    with pytest.raises(TdwiiError, match="is encrypted") as info:
        check_own_certificate(tmp_path / "locked.pem", tmp_path / "locked.key", None)
    assert "--key-password-file" in info.value.hint


def test_not_a_certificate_is_one_line(tmp_path: Path, pki_dir: Path) -> None:
    (tmp_path / "junk.pem").write_text("hello\n")
    with pytest.raises(TdwiiError) as info:
        check_own_certificate(tmp_path / "junk.pem", pki_dir / f"{CLIENT}.key", None)
    assert "junk.pem" in info.value.message and "\n" not in info.value.message
