"""tdwii_cli.tls: profiles, contexts, own-certificate checks and handshake diagnosis; the
library level of every TLS refusal, seen from both sides.

Every failure reason is produced by a real handshake over loopback (Python `ssl` on both
ends, a scripted socket peer, or openssl s_server/s_client as the peer) and then put into
words by `describe_handshake_error`, from the side that saw it. The same refusals end to
end: `tdwii echo` in tests/test_echo_tls.py, `tdwii serve`'s log in tests/test_serve.py;
as typed errors with exit codes: tests/test_association.py.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import ssl
import time
from pathlib import Path

import pytest

from conftest import (
    PKI_CA,
    PKI_CLIENT,
    PKI_SERVER,
    client_ssl_context,
    openssl_client,
    openssl_peer,
    server_ssl_context,
    tls_options,
    write_leaf,
)
from peers import A_ABORT, OneShotPeer, handshake
from tdwii_cli.cli.hints import hint_for
from tdwii_cli.errors import TdwiiError
from tdwii_cli.net.errors import HandshakeFailed
from tdwii_cli.net.sockets import set_nodelay
from tdwii_cli.pki.certs import key_problem, load_cert
from tdwii_cli.pki.keys import KeySpec
from tdwii_cli.tls.context import PROFILES, build_client_context, build_server_context
from tdwii_cli.tls.diagnosis import describe_handshake_error
from tdwii_cli.tls.owncert import _leaf_facts, check_own_certificate

# An A-ASSOCIATE-RQ starts with PDU type 0x01 (what a plain DICOM client sends first).
ASSOCIATE_RQ_START = bytes([0x01, 0x00, 0x00, 0x00, 0x00, 0xCD, 0x00, 0x01, 0x00, 0x00])


# ---------------------------------------------------------------------- helpers


def reason(exc: BaseException | None, side: str) -> str:
    """The reason in plain words, exactly as the side that saw `exc` puts it."""
    assert exc is not None, f"the {side} saw no error"
    return describe_handshake_error(exc, side=side).reason  # type: ignore[arg-type]


def words(exc: BaseException | None, side: str) -> str:
    """What the side that saw `exc` says: the reason, then the server log's advice or the
    client command line's hint."""
    assert exc is not None, f"the {side} saw no error"
    failure = describe_handshake_error(exc, side=side)  # type: ignore[arg-type]
    assert failure.reason and failure.advice
    if side == "client":
        return f"{failure.reason} | {hint_for(HandshakeFailed('peer', failure))}".lower()
    return f"{failure.reason} | {failure.advice}".lower()


def server_refusing(ctx: ssl.SSLContext, timeout: float = 5.0) -> OneShotPeer:
    """A one-connection server that runs the TLS handshake with `ctx` and hangs up."""
    return OneShotPeer(ssl_context=ctx, read=0, hang_up=True, timeout=timeout)


@pytest.fixture(scope="module")
def contexts(pki_dir: Path) -> dict[str, ssl.SSLContext]:
    return {
        "server_mtls": build_server_context(tls_options(pki_dir, "server")),
        "server_tls": build_server_context(tls_options(pki_dir, "server", "tls")),
        "client_mtls": build_client_context(tls_options(pki_dir, "client")),
        "client_tls": build_client_context(tls_options(pki_dir, "client", "tls")),
    }


# ---------------------------------------------------------------------- profiles and contexts


def _tls12_ciphers(ctx: ssl.SSLContext) -> set[str]:
    return {c["name"] for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"}


def test_profiles_follow_ps3_15_annex_b(pki_dir: Path) -> None:
    """Every profile, on both sides: its TLS 1.2 suites, never below TLS 1.2 (no TLS 1.1),
    its highest version, no renegotiation or compression; servers choose the cipher."""
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
            ctx = builder(tls_options(pki_dir, role, profile=name))
            assert _tls12_ciphers(ctx) == suites, (name, role)
            assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
            assert ctx.maximum_version == maximum
            assert ctx.options & ssl.OP_NO_RENEGOTIATION
            assert ctx.options & ssl.OP_NO_COMPRESSION
            if role == "server":
                assert ctx.options & ssl.OP_CIPHER_SERVER_PREFERENCE, name


def test_server_and_client_context_settings(pki_dir: Path) -> None:
    server = build_server_context(tls_options(pki_dir, "server"))
    assert server.verify_mode == ssl.CERT_REQUIRED
    assert server.options & ssl.OP_CIPHER_SERVER_PREFERENCE
    assert build_server_context(tls_options(pki_dir, "server", "tls")).verify_mode == (
        ssl.CERT_NONE
    )
    client = build_client_context(tls_options(pki_dir, "client"))
    assert client.verify_mode == ssl.CERT_REQUIRED and client.check_hostname
    assert client.protocol == ssl.PROTOCOL_TLS_CLIENT


def test_no_verify_hostname_warns(pki_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    logging.getLogger("tdwii").propagate = True
    with caplog.at_level(logging.WARNING, logger="tdwii.tls"):
        ctx = build_client_context(tls_options(pki_dir, "client", verify_hostname=False))
    assert not ctx.check_hostname
    assert "host name check is off" in caplog.text


def test_mtls_handshake_tls13_with_alpn_dicom(contexts: dict[str, ssl.SSLContext]) -> None:
    """The certificates `tdwii pki init` issues, in mutual TLS: data flows both ways."""
    out = handshake(contexts["server_mtls"], contexts["client_mtls"])
    assert out.client_error is None and out.server_error is None
    assert out.client_info == ("TLSv1.3", out.client_info[1], "dicom")
    assert out.client_info[1] in ("TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256")
    assert out.client_cn == "workitemcreator"  # the server saw the issued client certificate


@pytest.mark.parametrize("offer", [None, ["http/1.1"]])
def test_server_accepts_clients_without_dicom_alpn(
    pki_dir: Path, contexts: dict[str, ssl.SSLContext], offer: list[str] | None
) -> None:
    client = client_ssl_context(pki_dir)
    if offer:
        client.set_alpn_protocols(offer)
    out = handshake(contexts["server_mtls"], client)
    assert out.client_error is None and out.server_error is None
    assert out.server_sock_info is not None and out.server_sock_info[2] is None


def test_bcp195_ex_negotiates_tls12_ecdsa_gcm(pki_dir: Path) -> None:
    server = build_server_context(tls_options(pki_dir, "server"))
    client = build_client_context(tls_options(pki_dir, "client", profile="bcp195-ex"))
    out = handshake(server, client)
    assert out.client_error is None, out.client_error
    assert out.client_info is not None
    assert out.client_info[:2] == ("TLSv1.2", "ECDHE-ECDSA-AES128-GCM-SHA256")


def test_server_prefers_its_own_cipher_order(pki_dir: Path) -> None:
    server = build_server_context(tls_options(pki_dir, "server", profile="bcp195-ex"))
    client = build_client_context(tls_options(pki_dir, "client", profile="bcp195-ex"))
    client.set_ciphers("ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES128-GCM-SHA256")
    out = handshake(server, client)
    assert out.client_info is not None
    # the server's list has AES-128 before AES-256; server preference wins over the client's
    assert out.client_info[1] == "ECDHE-ECDSA-AES128-GCM-SHA256"


# ---------------------------------------------------------------------- failures, both sides


def test_no_client_certificate(contexts: dict[str, ssl.SSLContext]) -> None:
    out = handshake(contexts["server_mtls"], contexts["client_tls"])
    assert "no client certificate presented" in words(out.server_error, "server")
    assert "no client certificate presented" in reason(out.server_error, "server")
    client = words(out.client_error, "client")
    assert "requires a client certificate" in client and "--mtls" in client


def test_client_certificate_from_untrusted_ca(
    pki_dir: Path, other_ca_pki: Path, contexts: dict[str, ssl.SSLContext]
) -> None:
    """The other PKI's client certificate; the client trusts our CA, so it accepts the
    server and only its own certificate is foreign."""
    client = build_client_context(tls_options(other_ca_pki, "client", ca=pki_dir / PKI_CA))
    out = handshake(contexts["server_mtls"], client)
    assert "untrusted ca" in words(out.server_error, "server")
    assert "certificate" in str(out.server_error).lower()  # OpenSSL's own words too
    assert out.client_cn is None  # the server never took it
    assert "ca the peer does not trust" in words(out.client_error, "client")


def test_server_certificate_from_untrusted_ca(pki_dir: Path, other_ca_pki: Path) -> None:
    server = build_server_context(tls_options(other_ca_pki, "server", ca=pki_dir / PKI_CA))
    client = build_client_context(tls_options(pki_dir, "client"))
    out = handshake(server, client)
    assert isinstance(out.client_error, ssl.SSLCertVerificationError), out.client_error
    assert "untrusted ca" in words(out.client_error, "client")
    assert "untrusted CA" in reason(out.client_error, "client")
    assert "--ca" in words(out.client_error, "client")
    assert "ca the peer does not trust" in words(out.server_error, "server")
    assert "CA the peer does not trust" in reason(out.server_error, "server")
    assert out.client_cn is None


def _server_with(tmp_path: Path, pki_dir: Path, name: str, **kwargs: object) -> ssl.SSLContext:
    write_leaf(tmp_path, pki_dir, name, **kwargs)
    return server_ssl_context(tmp_path, name, mutual=False)  # no own-certificate checks


def test_expired_server_certificate(tmp_path: Path, pki_dir: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    server = _server_with(
        tmp_path,
        pki_dir,
        "old",
        not_before=now - dt.timedelta(days=30),
        not_after=now - dt.timedelta(days=1),
    )
    out = handshake(server, build_client_context(tls_options(pki_dir, "client")))
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
    out = handshake(server, build_client_context(tls_options(pki_dir, "client")))
    assert "not yet valid" in words(out.client_error, "client")


def test_hostname_mismatch(other_name_cert: tuple[Path, Path], pki_dir: Path) -> None:
    pem, _ = other_name_cert
    server = server_ssl_context(pem.parent, pem.stem, mutual=False)  # no own-certificate checks
    out = handshake(server, build_client_context(tls_options(pki_dir, "client")))
    text = words(out.client_error, "client")
    assert "host name mismatch" in text and "--no-verify-hostname" in text
    out = handshake(server, build_client_context(tls_options(pki_dir, "client")), "127.0.0.1")
    assert "host name mismatch" in words(out.client_error, "client")
    unchecked = build_client_context(tls_options(pki_dir, "client", verify_hostname=False))
    assert handshake(server, unchecked).client_error is None


def test_revoked_client_refused_by_server_with_crl(revoked_pki: Path) -> None:
    crl = revoked_pki / "rootCA/rootCA.crl.pem"
    server = build_server_context(tls_options(revoked_pki, "server", crl=crl))
    out = handshake(server, build_client_context(tls_options(revoked_pki, "client")))
    assert "revoked" in words(out.server_error, "server")
    assert "says our certificate is revoked" in words(out.client_error, "client")
    # without the CRL the same certificates work: the CRL made the difference
    plain = handshake(
        build_server_context(tls_options(revoked_pki, "server")),
        build_client_context(tls_options(revoked_pki, "client")),
    )
    assert plain.client_error is None and plain.server_error is None


def test_revoked_server_refused_by_client_with_crl(revoked_pki: Path) -> None:
    crl = revoked_pki / "rootCA/rootCA.crl.pem"
    client = build_client_context(tls_options(revoked_pki, "client", crl=crl))
    out = handshake(build_server_context(tls_options(revoked_pki, "server")), client)
    assert "certificate is revoked" in words(out.client_error, "client")


def test_no_shared_cipher(pki_dir: Path, contexts: dict[str, ssl.SSLContext]) -> None:
    client = client_ssl_context(pki_dir, node=None)
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.set_ciphers("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-CHACHA20-POLY1305")  # CBC, ChaCha
    out = handshake(contexts["server_tls"], client)
    assert "no shared cipher" in words(out.server_error, "server")
    assert "no shared cipher" in words(out.client_error, "client")


def test_profile_without_suites_for_an_ec_server(pki_dir: Path) -> None:
    """bcp195-nd has RSA suites only in TLS 1.2: an EC server and a TLS 1.2 client share none."""
    server = build_server_context(tls_options(pki_dir, "server", profile="bcp195-nd"))
    client = build_client_context(tls_options(pki_dir, "client", profile="bcp195-ex"))
    out = handshake(server, client)
    assert "no shared cipher" in words(out.client_error, "client")


def test_server_refuses_a_tls11_client(contexts: dict[str, ssl.SSLContext]) -> None:
    server = server_refusing(contexts["server_tls"])
    result = openssl_client(server.port, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0")
    error = server.done()
    assert "protocol version refused" in reason(error, "server")
    assert "protocol version refused" in words(error, "server")
    assert result.returncode != 0
    assert "protocol version" in result.stderr.lower()  # the alert openssl received


@pytest.mark.parametrize("suite", ["AES128-SHA", "ECDHE-ECDSA-AES128-SHA"])
def test_server_refuses_a_cbc_only_client(contexts: dict[str, ssl.SSLContext], suite: str) -> None:
    """TLS 1.2 with a CBC suite only: RSA key exchange, or even the server's own ECDSA."""
    server = server_refusing(contexts["server_tls"])
    openssl_client(server.port, "-tls1_2", "-cipher", f"{suite}:@SECLEVEL=0")
    error = server.done()
    assert "no shared cipher" in reason(error, "server")
    assert "no shared cipher" in words(error, "server")


def test_client_refuses_a_tls11_server(pki_dir: Path) -> None:
    cert, key = pki_dir / f"{PKI_SERVER}.pem", pki_dir / f"{PKI_SERVER}.key"
    client = build_client_context(tls_options(pki_dir, "client"))
    with openssl_peer(cert, key, "-tls1_1", "-cipher", "DEFAULT:@SECLEVEL=0", "-quiet") as port:
        raw = socket.create_connection(("127.0.0.1", port), timeout=5)
        with pytest.raises(ssl.SSLError) as info:
            client.wrap_socket(raw, server_hostname="localhost")
        raw.close()
    assert "protocol version refused" in words(info.value, "client")


def test_plain_dicom_to_a_tls_port(contexts: dict[str, ssl.SSLContext]) -> None:
    server = server_refusing(contexts["server_mtls"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(ASSOCIATE_RQ_START + bytes(200))
        error = server.done()
    assert "does not speak tls" in words(error, "server")
    assert "does not speak TLS" in reason(error, "server")
    assert "plain dicom" in words(error, "server")


def test_tls_to_a_plain_dicom_port(contexts: dict[str, ssl.SSLContext]) -> None:
    """A plain DICOM node answers our ClientHello with an A-ABORT (PDU type 0x07)."""
    peer = OneShotPeer(A_ABORT)
    raw = socket.create_connection(("127.0.0.1", peer.port), timeout=5)
    with pytest.raises(ssl.SSLError) as info:
        contexts["client_mtls"].wrap_socket(raw, server_hostname="localhost")
    raw.close()
    peer.done()
    assert "does not speak TLS" in reason(info.value, "client")
    assert "does not speak tls" in words(info.value, "client")


def test_closed_during_handshake(contexts: dict[str, ssl.SSLContext]) -> None:
    # the server side: a client that sends half a ClientHello and hangs up
    server = server_refusing(contexts["server_mtls"])
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00]))
    assert "closed during the tls handshake" in words(server.done(), "server")
    # the client side: a server that accepts and closes, after reading a little or at once
    for read in (10, 0):
        closer = OneShotPeer(read=read, hang_up=True)
        raw = socket.create_connection(("127.0.0.1", closer.port), timeout=5)
        with pytest.raises(OSError) as info:
            contexts["client_mtls"].wrap_socket(raw, server_hostname="localhost")
        raw.close()
        closer.done()
        assert "closed during the TLS handshake" in reason(info.value, "client"), read
        assert "closed during the tls handshake" in words(info.value, "client"), read


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
    server = server_refusing(contexts["server_mtls"], timeout=0.3)
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        error = server.done(5)
    assert "timed out" in words(error, "server")


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
    pem = write_leaf(tmp_path, pki_dir, name, **kwargs)
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


def test_own_certificate_rsa_2048_accepted(
    tmp_path: Path, pki_dir: Path, contexts: dict[str, ssl.SSLContext]
) -> None:
    cert, key = _own(tmp_path, pki_dir, "rsa", key_spec=KeySpec("rsa", 2048))
    ctx = client_ssl_context(pki_dir, node=None)
    check_own_certificate(cert, key, None, ctx)  # no exception, and the pair is in `ctx`:
    out = handshake(contexts["server_mtls"], ctx)
    assert out.client_error is None and out.server_error is None
    assert out.client_cn == "rsa"  # the server got the RSA certificate


def test_own_key_not_matching(tmp_path: Path, pki_dir: Path) -> None:
    cert, _ = _own(tmp_path, pki_dir, "one")
    _, other_key = _own(tmp_path, pki_dir, "two")
    with pytest.raises(TdwiiError, match="does not belong to certificate"):
        check_own_certificate(cert, other_key, None)
    # the same refusal when building a context, before any connection
    options = tls_options(pki_dir, "client", cert=cert, key=other_key)
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
    caplog.clear()  # a server context and its post-handshake twin: checked, and warned, once
    with caplog.at_level(logging.WARNING, logger="tdwii.tls"):
        server = build_server_context(tls_options(pki_dir, "server", cert=cert, key=key))
    assert caplog.text.count("expires in") == 1, caplog.text
    assert server.after_handshake is not None and server.after_handshake.own is server.own


def test_wrong_key_password_one_line_without_the_password(tmp_path: Path, pki_dir: Path) -> None:
    write_leaf(tmp_path, pki_dir, "locked", password=b"right-horse-battery")
    (tmp_path / "pw").write_text("Wr0ngSecretXYZ\n")
    with pytest.raises(TdwiiError) as info:
        check_own_certificate(tmp_path / "locked.pem", tmp_path / "locked.key", b"Wr0ngSecretXYZ")
    text = info.value.message + info.value.hint
    assert "password" in text.lower()
    assert "Wr0ngSecretXYZ" not in text and "right-horse" not in text
    assert "\n" not in text
    # and the right password works through the option's file
    (tmp_path / "pw").write_text("right-horse-battery\n")
    options = tls_options(
        tmp_path, "client", node="locked", ca=pki_dir / PKI_CA, key_password_file=tmp_path / "pw"
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
    assert facts.not_before == loaded.not_valid_before_utc
    assert facts.not_after == loaded.not_valid_after_utc
    assert facts.weakness == (key_problem(loaded) or "")
    assert bool(facts.weakness) == (key in ("ec224", "rsa1024"))
    assert facts.key_type == ("EC" if key.startswith("ec") else "RSA")


def test_encrypted_key_without_password(tmp_path: Path, pki_dir: Path) -> None:
    write_leaf(tmp_path, pki_dir, "locked", password=b"pw-123456")
    with pytest.raises(TdwiiError, match="is encrypted") as info:
        check_own_certificate(tmp_path / "locked.pem", tmp_path / "locked.key", None)
    assert "--key-password-file" in info.value.hint


def test_not_a_certificate_is_one_line(tmp_path: Path, pki_dir: Path) -> None:
    (tmp_path / "junk.pem").write_text("hello\n")
    with pytest.raises(TdwiiError) as info:
        check_own_certificate(tmp_path / "junk.pem", pki_dir / f"{PKI_CLIENT}.key", None)
    assert "junk.pem" in info.value.message and "\n" not in info.value.message
