"""Trust that stays right while `tdwii serve` runs: the CA's CRL used by default, reread when
it changes (a device revoked, an expired CRL reissued) and on SIGHUP; client certificates
OpenSSL would take but a TLS peer must not present; every refusal naming the certificate's
CN. Real peers throughout: `tdwii serve` and `tdwii echo` processes, `openssl s_client`.
"""

from __future__ import annotations

import datetime as dt
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (
    PKI_CA,
    PKI_CLIENT,
    TdwiiServer,
    mtls_args,
    one_error_line,
    openssl_client,
    run_echo_cli,
    start_tdwii_server,
    unfit_leaf,
    wait_until,
    write_leaf,
)

CRL = "rootCA/rootCA.crl.pem"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A folder with its own `tdwii pki init` (tests here revoke and reissue) and a device."""
    from tdwii_cli.pki.authority import init_pki, issue_node

    init_pki(tmp_path / "certs")
    issue_node(tmp_path / "certs", "client", "linac2")
    return tmp_path


def device(workdir: Path, name: str = "linac2") -> list[str]:
    return mtls_args(workdir / "certs", f"clients/{name}/{name}")


def echo(server: TdwiiServer, *args: str) -> subprocess.CompletedProcess[str]:
    return run_echo_cli(*args, "localhost", str(server.port))


def pki(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "pki", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )


def write_crl(workdir: Path, last: dt.timedelta, next_: dt.timedelta) -> None:
    """Replace the CA's CRL by an empty one valid from now+`last` to now+`next_`."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization

    from tdwii_cli.pki.authority import load_ca

    key, cert = load_ca(workdir / "certs")
    now = dt.datetime.now(dt.timezone.utc)
    crl = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(cert.subject)
        .last_update(now + last)
        .next_update(now + next_)
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    (workdir / "certs" / CRL).write_bytes(crl.public_bytes(serialization.Encoding.PEM))


def test_device_revoked_while_serving_is_refused_within_seconds(workdir: Path) -> None:
    server = start_tdwii_server(workdir)
    try:
        log = server.wait_log("revocation: checking clients against")
        assert f"certs/{CRL}" in log and "--no-crl turns this off" in log
        assert echo(server, *device(workdir)).returncode == 0
        revoked = pki(workdir, "revoke", "linac2")
        assert revoked.returncode == 0, revoked.stderr
        assert "tdwii serve" in revoked.stdout  # says who picks it up, and when
        # no restart: the CRL is reread when its file changes
        start = len(server.log_text())
        wait_until(
            lambda: echo(server, *device(workdir)).returncode == 63, 15, "the device refused"
        )
        refused = server.wait_log("revoked", start)
        assert "(linac2): TLS handshake failed: the peer's certificate is revoked" in refused
        assert (
            echo(server, *mtls_args(workdir / "certs")).returncode == 0
        )  # the other device still gets in
    finally:
        assert server.stop() == 0


def test_no_crl_turns_the_default_off(workdir: Path) -> None:
    from tdwii_cli.pki.authority import revoke

    revoke(workdir / "certs", "linac2")
    server = start_tdwii_server(workdir, "--no-crl")
    try:
        assert echo(server, *device(workdir)).returncode == 0
        assert "revocation: checking" not in server.log_text()
    finally:
        server.stop()
    with_crl = start_tdwii_server(workdir)
    try:
        assert echo(with_crl, *device(workdir)).returncode == 63
    finally:
        with_crl.stop()


def test_expired_crl_then_reissued_lets_clients_back_in(workdir: Path) -> None:
    write_crl(workdir, dt.timedelta(days=-31), dt.timedelta(days=-1))
    server = start_tdwii_server(workdir)
    try:
        log = server.wait_log("passed its next update")
        assert "ERROR" in log and "every client is refused" in log and "tdwii pki crl" in log
        proc = echo(server, *mtls_args(workdir / "certs"))
        assert proc.returncode == 63
        line = one_error_line(proc)
        assert "our certificate has expired" not in line
        assert "our certificate is valid until" in line and "CRL" in line
        server.wait_log("(workitemcreator): TLS handshake failed: the CRL has expired")
        assert pki(workdir, "crl").returncode == 0
        wait_until(
            lambda: echo(server, *mtls_args(workdir / "certs")).returncode == 0,
            15,
            "clients back in",
        )
        assert "CRL file changed: CRL" in server.log_text()
    finally:
        assert server.stop() == 0


def test_crl_running_out_soon_is_warned_and_sighup_rereads_it(workdir: Path) -> None:
    write_crl(workdir, dt.timedelta(minutes=-5), dt.timedelta(days=2))
    server = start_tdwii_server(workdir)
    try:
        log = server.wait_log("runs out on")
        assert "WARNING" in log and "reissue it before then" in log
        start = len(server.log_text())
        server.proc.send_signal(signal.SIGHUP)
        assert "reloaded: 0 revoked" in server.wait_log("SIGHUP: CRL", start)
        assert echo(server, *mtls_args(workdir / "certs")).returncode == 0
    finally:
        assert server.stop() == 0


def test_a_crl_from_another_ca_is_refused_at_start(workdir: Path, other_ca_pki: Path) -> None:
    shutil.copy(other_ca_pki / CRL, workdir / "certs" / CRL)
    proc = subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "serve", "--mtls", "-p", "0", "--db", "t.sqlite"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0
    assert "is not signed by the trusted CA" in one_error_line(proc)


@pytest.mark.parametrize(
    ("ca", "words"),
    [
        (False, "KeyUsage lacks digitalSignature"),
        (True, "is a CA certificate (BasicConstraints CA:TRUE)"),
    ],
)
@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_unfit_client_certificates_are_refused(
    workdir: Path, ca: bool, words: str, version: str
) -> None:
    name = "subca" if ca else "keyagree"
    pem = unfit_leaf(workdir / "certs", workdir, name, ca=ca)
    server = start_tdwii_server(workdir)
    try:
        args = ["-cert", str(pem), "-key", str(pem.with_suffix(".key")), version]
        openssl_client(server.port, *args, "-CAfile", str(workdir / "certs" / PKI_CA))
        log = server.wait_log("certificate refused")
        assert f"({name}): closed: certificate refused: its certificate" in log
        assert words in log
        assert f"({name}): association accepted" not in server.log_text()
    finally:
        server.stop()


@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_a_refused_handshake_names_the_certificate_presented(
    workdir: Path, other_ca_pki: Path, version: str
) -> None:
    """A certificate from an untrusted CA: Python's ssl shows nothing of it, the log its CN."""
    server = start_tdwii_server(workdir)
    try:
        cert = other_ca_pki / PKI_CLIENT
        openssl_client(
            server.port, "-cert", f"{cert}.pem", "-key", f"{cert}.key", version, "-quiet"
        )
        log = server.wait_log("TLS handshake failed")
        assert "(workitemcreator): TLS handshake failed: the peer's certificate is from an" in log
    finally:
        server.stop()


def test_a_device_with_a_fresh_certificate_gets_in_after_sighup(workdir: Path) -> None:
    """SIGHUP rereads our own certificate and key too (a renewed server certificate)."""
    server = start_tdwii_server(workdir)
    try:
        node = workdir / "certs/servers/worklistmanager/worklistmanager"
        write_leaf(node.parent, workdir / "certs", "worklistmanager", sans=["localhost"])
        start = len(server.log_text())
        server.proc.send_signal(signal.SIGHUP)
        server.wait_log("SIGHUP: CRL", start)
        proc = run_echo_cli(*mtls_args(workdir / "certs"), "-v", "localhost", str(server.port))
        assert proc.returncode == 0, proc.stderr
        from cryptography.hazmat.primitives import hashes

        from tdwii_cli.pki.certs import load_cert

        fingerprint = load_cert(f"{node}.pem").fingerprint(hashes.SHA256())
        assert f"sha256={fingerprint[:8].hex(':').upper()}" in proc.stderr  # the new one
    finally:
        server.stop()
