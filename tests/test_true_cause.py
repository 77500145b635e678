"""Messages that tell the true cause, each produced by a real peer: `openssl s_server` and
`s_client`, DCMTK's findscu, `tdwii serve` and `tdwii echo` processes.

A server that closes after a TLS 1.2 handshake did take our certificate (62, not 63); a
suite failure caused by a key type says so and names the profile that works; a version
failure says which versions each side allows; a missing file names the option that named
it; a host name that does not resolve says so; rejected contexts are named.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from conftest import (
    PKI_CA,
    PKI_CLIENT,
    PKI_SERVER,
    free_port,
    mtls_args,
    one_error_line,
    openssl_client,
    openssl_peer,
    require_tool,
    run_echo_cli,
    start_tdwii_server,
    unfit_leaf,
    wait_until,
    write_leaf,
)


@pytest.fixture(scope="module")
def rsa_server(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An RSA server certificate from the `pki_dir` CA (the PKI's own keys are EC)."""
    from tdwii_cli.pki.keys import KeySpec

    folder = tmp_path_factory.mktemp("rsa")
    return write_leaf(folder, pki_dir, "rsaserver", key_spec=KeySpec("rsa", 2048)).with_suffix("")


def s_server(node: Path, *extra: str, answer: bool = True) -> AbstractContextManager[int]:
    """`openssl s_server` with the certificate and key of `node` (a PKI path without suffix)."""
    return openssl_peer(Path(f"{node}.pem"), Path(f"{node}.key"), *extra, answer=answer)


def echo_error(pki_dir: Path, port: int, *args: str) -> tuple[int, str]:
    proc = run_echo_cli(*mtls_args(pki_dir), "-ta", "5", *args, "localhost", str(port))
    return proc.returncode, one_error_line(proc) if proc.returncode else ""


# -- a server that closes without answering --------------------------------------------


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_a_server_closing_after_the_handshake_did_not_answer(pki_dir: Path, version: str) -> None:
    """openssl s_server verifies our certificate (and says so with its session ticket in TLS
    1.3), then hangs up: that is no certificate problem."""
    cert = pki_dir / PKI_SERVER
    ca = str(pki_dir / PKI_CA)
    with s_server(
        cert,
        version,
        "-CAfile",
        ca,
        "-Verify",
        "1",
        "-verify_return_error",
        answer=False,
    ) as port:
        code, line = echo_error(pki_dir, port)
    assert code == 62, line
    assert "closed the connection without answering the association request" in line
    assert "TLS handshake had succeeded" in line and "certificate" not in line


def test_a_tdwii_server_closing_on_our_certificate_after_tls13(tmp_path: Path) -> None:
    """tdwii serve refuses a CA:TRUE client certificate once the TLS 1.3 handshake is done and
    sends no session ticket: there the certificate wording is right (63)."""
    from tdwii_cli.pki.authority import init_pki

    init_pki(tmp_path / "certs")
    pem = unfit_leaf(tmp_path / "certs", tmp_path, "subca", ca=True)
    server = start_tdwii_server(tmp_path)
    try:
        args = ["--mtls", "-ca", str(tmp_path / "certs" / PKI_CA), "-cert", str(pem)]
        proc = run_echo_cli(
            *args, "-key", str(pem.with_suffix(".key")), "localhost", str(server.port)
        )
        assert proc.returncode == 63
        assert "most likely it did not accept our certificate" in one_error_line(proc)
        server.wait_log("(subca): closed: certificate refused")
    finally:
        server.stop()


# -- key types and suites ----------------------------------------------------------------


def test_ec_server_with_an_rsa_only_profile_warns_and_explains(
    pki_dir: Path, tmp_path: Path
) -> None:
    """bcp195-nd's TLS 1.2 suites are RSA only: with the PKI's EC key, serve warns at start,
    and a TLS 1.2 client's failure is logged as the key-type mismatch it is."""
    (tmp_path / "certs").symlink_to(pki_dir)
    server = start_tdwii_server(tmp_path, "--tls-profile", "bcp195-nd")
    try:
        assert "only TLS 1.3 clients can connect" in server.wait_log("profile bcp195-nd has only")
        openssl_client(server.port, "-tls1_2", "-CAfile", str(pki_dir / PKI_CA))
        log = server.wait_log("TLS handshake failed")
        assert "no shared cipher suite: our key does not suit the profile" in log
        assert "bcp195-rfc8996 or bcp195-ex" in log
        assert "RFC 9325 suites" not in log
    finally:
        server.stop()


def test_server_names_the_key_type_the_client_suites_need(
    pki_dir: Path, rsa_server: Path, tmp_path: Path
) -> None:
    """Our RSA key against a client offering ECDSA suites only."""
    certs = tmp_path / "certs"
    certs.symlink_to(pki_dir)
    server = start_tdwii_server(
        tmp_path, "--cert", f"{rsa_server}.pem", "--key", f"{rsa_server}.key", tls=True
    )
    try:
        openssl_client(server.port, "-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256")
        log = server.wait_log("TLS handshake failed")
        assert "the suites we share with the client need an EC certificate" in log
        assert "ours has an RSA key" in log
    finally:
        server.stop()


def test_client_with_an_rsa_only_profile_against_an_ec_tls12_server(pki_dir: Path) -> None:
    cert = pki_dir / PKI_SERVER
    with s_server(cert, "-tls1_2") as port:
        code, line = echo_error(pki_dir, port, "--tls-profile", "bcp195-nd")
    assert code == 63
    assert "profile bcp195-nd offers only RSA suites for TLS 1.2" in line
    assert "bcp195-rfc8996 or bcp195-ex" in line and "--tls-profile" in line
    assert "use a peer with RFC 9325 suites" not in line


def test_client_against_an_ec_server_with_rsa_suites_only(pki_dir: Path) -> None:
    """We offer every RFC 9325 suite; the server's EC key suits none of its own (RSA) suites."""
    cert = pki_dir / PKI_SERVER
    suites = "ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
    with s_server(cert, "-tls1_2", "-cipher", suites) as port:
        code, line = echo_error(pki_dir, port)
    assert code == 63
    assert "we offer the RFC 9325 suites for RSA and EC keys" in line
    assert "an EC certificate with only RSA suites" in line


# -- versions ----------------------------------------------------------------------------


def test_tls12_only_profile_against_a_tls13_only_server(pki_dir: Path) -> None:
    cert = pki_dir / PKI_SERVER
    with s_server(cert, "-tls1_3") as port:
        code, line = echo_error(pki_dir, port, "--tls-profile", "bcp195-ex")
    assert code == 63
    assert "we allow TLS 1.2 only (profile bcp195-ex)" in line
    assert "allows only TLS 1.3" in line and "TLS 1.0/1.1" not in line
    assert "bcp195-rfc8996" in line


def test_tls12_only_server_against_a_tls13_only_client(pki_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "certs").symlink_to(pki_dir)
    server = start_tdwii_server(tmp_path, "--tls-profile", "bcp195-ex")
    try:
        openssl_client(server.port, "-tls1_3")
        log = server.wait_log("TLS handshake failed")
        assert "we allow TLS 1.2 only (profile bcp195-ex); the client offers TLS 1.3 only" in log
    finally:
        server.stop()


# -- files and names ------------------------------------------------------------------------


def test_a_missing_file_names_the_option_that_named_it(tmp_path: Path, pki_dir: Path) -> None:
    ca = str(pki_dir / PKI_CA)
    given = run_echo_cli(
        "--mtls", "--ca", ca, "--cert", str(tmp_path / "nope.pem"), "localhost", "2762"
    )
    line = one_error_line(given)
    assert f"certificate {tmp_path / 'nope.pem'} (from --cert) not found" in line
    assert "pki init" not in line
    default = subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "echo", "--mtls", "localhost", "2762"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    line = one_error_line(default)
    assert "CA certificate certs/rootCA/rootCA.pem not found" in line
    assert "used without --ca" in line and "run `tdwii pki init` here" in line


def test_a_host_name_that_does_not_resolve(pki_dir: Path) -> None:
    proc = run_echo_cli("no-such-host.invalid", "104")
    assert proc.returncode == 60
    line = one_error_line(proc)
    assert "the host name 'no-such-host.invalid' does not resolve" in line
    assert "is the server running" not in line


# -- contexts ----------------------------------------------------------------------------


def test_rejected_contexts_named_and_leaving_after_them_is_no_warning(tmp_path: Path) -> None:
    """DCMTK findscu asks for Modality Worklist, which tdwii serve does not offer, and hangs
    up; pynetdicom sends an A-ABORT instead. The log names the rejected context; neither
    way of leaving is a WARNING."""
    from pynetdicom import AE

    findscu = require_tool("findscu")
    server = start_tdwii_server(tmp_path, tls=False)
    try:
        subprocess.run(
            [findscu, "-W", "-k", "PatientName=*", "127.0.0.1", str(server.port)],
            capture_output=True,
            timeout=30,
        )
        log = server.wait_log("we accepted none of its contexts")
        mwl = "Modality Worklist Information Model - FIND (1.2.840.10008.5.1.4.31)"
        assert f"rejected  {mwl}" in log
        ae = AE()
        ae.add_requested_context("1.2.840.10008.5.1.4.1.1.2")  # CT Image Storage
        assoc = ae.associate("127.0.0.1", server.port)
        assert not assoc.is_established
        log = server.wait_log("association aborted by the peer")
        assert "rejected  CT Image Storage (1.2.840.10008.5.1.4.1.1.2)" in log
        lines = [x for x in log.splitlines() if "accepted none of its contexts" in x]
        assert len(lines) == 2 and all(" INFO " in x for x in lines), lines
        assert "WARNING" not in log
    finally:
        server.stop()


# -- first use: ready, waiting, Ctrl-C ---------------------------------------------------


def test_ready_file_and_echo_wait_replace_sleep(tmp_path: Path, pki_dir: Path) -> None:
    (tmp_path / "certs").symlink_to(pki_dir)
    port = free_port()
    ready = tmp_path / "ready"
    proc = subprocess.Popen(
        [
            *(sys.executable, "-m", "tdwii_cli", "serve", "--mtls", "-p", str(port)),
            *("-ba", "127.0.0.1", "--db", "t.sqlite", "--ready-file", str(ready)),
        ],
        cwd=tmp_path,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # started at once, before the server listens: --wait retries the refused connects
        waited = run_echo_cli(*mtls_args(pki_dir), "--wait", "60", "localhost", str(port))
        assert waited.returncode == 0, waited.stderr
        assert ready.read_text() == f"127.0.0.1 {port}\n"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert not ready.exists()  # removed at exit
    start = time.monotonic()
    nobody = run_echo_cli("--wait", "1", "127.0.0.1", str(free_port()))
    assert nobody.returncode == 60 and time.monotonic() - start >= 1.0


def test_ctrl_c_with_clients_connected_but_not_associated(tmp_path: Path, pki_dir: Path) -> None:
    """One client done with its TLS handshake, one in the middle of it: no traceback."""
    (tmp_path / "certs").symlink_to(pki_dir)
    server = start_tdwii_server(tmp_path)
    client = pki_dir / PKI_CLIENT
    exe = require_tool("openssl")
    connected = subprocess.Popen(
        [
            *(exe, "s_client", "-connect", f"127.0.0.1:{server.port}", "-quiet"),
            *("-cert", f"{client}.pem", "-key", f"{client}.key", "-CAfile", str(pki_dir / PKI_CA)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    halfway = socket.create_connection(("127.0.0.1", server.port))
    ctx = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    hello = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        with pytest.raises(ssl.SSLWantReadError):
            hello.do_handshake()
        halfway.sendall(outgoing.read())  # a ClientHello, and nothing more
        wait_until(lambda: "TLS handshake ok" in server.log_text(), 15, "s_client's handshake")
        server.proc.send_signal(signal.SIGINT)
        assert server.proc.wait(30) == 0
    finally:
        connected.kill()
        connected.wait()
        halfway.close()
    log = server.log_text()
    assert "Traceback" not in log and "Error" not in log.replace("ERROR", "")
    assert "SIGINT received: stopping" in log
    assert os.path.getsize(server.log) > 0
