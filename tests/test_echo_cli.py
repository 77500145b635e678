"""`tdwii echo` as a user runs it: results, counts, exit codes 61/62/63/64, logs, imports.

Complements test_echo_tls.py (success, untrusted/no client certificate, closed port,
profiles, TLS 1.1, host names, own-certificate refusals). Peers: DCMTK storescp
(plain and +tls), an in-process pynetdicom Verification SCP, raw listeners.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import free_port, require_tool, wait_port
from tdwii_cli import pki

CA = "rootCA/rootCA.pem"
SRV = "servers/worklistmanager/worklistmanager"
CLI = "clients/workitemcreator/workitemcreator"
VERIFICATION = "1.2.840.10008.1.1"


def tdwii_echo(*args: str, cwd: Path | None = None, timeout: float = 60):
    """`python -m tdwii_cli echo ARGS` with stdout/stderr piped."""
    return subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "echo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
    )


def mtls(root: Path, node: str = CLI) -> list[str]:
    return [
        "--mtls",
        "-ca",
        str(root / CA),
        "-cert",
        f"{root / node}.pem",
        "-key",
        f"{root / node}.key",
    ]


def error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The one error line (and no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tdwii: error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def storescp(root: Path | None, *extra: str, node: str = SRV) -> tuple[subprocess.Popen, int]:
    """DCMTK storescp (with +tls when `root` is given), TCP_NODELAY=1, on a free port."""
    exe = require_tool("storescp")
    port = free_port()
    tls = (
        ["+tls", f"{root / node}.key", f"{root / node}.pem", "+cf", str(root / CA)] if root else []
    )
    proc = subprocess.Popen(
        [exe, *tls, *extra, str(port)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    try:
        wait_port(port, proc)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    return proc, port


@pytest.fixture(scope="module")
def dcmtk_tls(pki_dir: Path) -> Iterator[int]:
    proc, port = storescp(pki_dir)
    try:
        yield port
    finally:
        proc.kill()
        proc.wait()


# ---------------------------------------------------------------------- results and logs


def test_count_and_repeat_result_line_and_log(pki_dir: Path, dcmtk_tls: int) -> None:
    proc = tdwii_echo(
        *mtls(pki_dir), "-v", "--count", "4", "--repeat", "3", "localhost", str(dcmtk_tls)
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip().splitlines()
    assert len(out) == 1  # one short result on stdout, the log on stderr
    assert f"ANY-SCP@localhost:{dcmtk_tls} over TLSv1.3 " in out[0]
    assert "12 sent, status 0x0000 (Success)" in out[0]
    low, mid, high = map(
        float, re.search(r"min ([\d.]+) median ([\d.]+) max ([\d.]+)", out[0]).groups()
    )
    assert 0 < low <= mid <= high
    assert proc.stderr.count("TLS handshake ok, TLSv1.3") == 3
    assert proc.stderr.count("association released") == 3
    assert proc.stderr.count("association accepted, TDWII -> ANY-SCP") == 3
    assert (
        len(re.findall(r"C-ECHO id=[1-4] status 0x0000 \(Success\) in [\d.]+ ms", proc.stderr))
        == 12
    )
    assert "\x1b[" not in proc.stderr + proc.stdout  # plain lines when piped


def test_quiet_by_default(pki_dir: Path, dcmtk_tls: int) -> None:
    proc = tdwii_echo(*mtls(pki_dir), "localhost", str(dcmtk_tls))
    assert proc.returncode == 0
    assert proc.stderr == ""
    assert "1 sent, status 0x0000 (Success)" in proc.stdout


def test_debug_shows_the_full_peer_certificate(pki_dir: Path, dcmtk_tls: int) -> None:
    proc = tdwii_echo(*mtls(pki_dir), "-d", "localhost", str(dcmtk_tls))
    assert proc.returncode == 0, proc.stderr
    detail = [line for line in proc.stderr.splitlines() if "peer certificate subject=" in line]
    assert len(detail) == 1
    assert "CN=worklistmanager" in detail[0] and "DNS:localhost" in detail[0]
    assert re.search(r"sha256=([0-9A-F]{2}:){31}[0-9A-F]{2}", detail[0])


def test_many_echoes_on_one_association_against_fast_dcmtk(pki_dir: Path, dcmtk_tls: int) -> None:
    start = time.monotonic()
    proc = tdwii_echo(*mtls(pki_dir), "-td", "5", "--count", "500", "localhost", str(dcmtk_tls))
    assert proc.returncode == 0, proc.stderr
    assert "500 sent, status 0x0000 (Success)" in proc.stdout
    assert time.monotonic() - start < 20  # one lost response would wait -td 5 s


def test_help_documents_the_exit_codes() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "echo", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert proc.returncode == 0
    for code in ("60", "61", "62", "63", "64"):
        assert re.search(rf"\b{code}\b", proc.stdout), code
    for option in ("--count", "--repeat", "-aet", "-aec", "-to", "-ta", "-td", "--mtls", "--crl"):
        assert option in proc.stdout


def test_one_shot_echo_imports_no_pynetdicom_pydicom_or_cryptography(
    pki_dir: Path, dcmtk_tls: int
) -> None:
    cmd = [sys.executable, "-X", "importtime", "-m", "tdwii_cli", "echo", *mtls(pki_dir)]
    proc = subprocess.run(
        [*cmd, "localhost", str(dcmtk_tls)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "tdwii_cli.echoing" in imported  # the import log is really there
    heavy = ("pynetdicom", "pydicom", "cryptography")  # the own-certificate check reads DER
    assert not {m for m in imported if m.split(".")[0] in heavy}


# ---------------------------------------------------------------------- exit codes


def test_rejected_association_is_61(pki_dir: Path) -> None:
    proc, port = storescp(pki_dir, "--refuse")
    try:
        result = tdwii_echo(*mtls(pki_dir), "localhost", str(port))
    finally:
        proc.kill()
        proc.wait()
    assert result.returncode == 61
    assert f"association rejected by ANY-SCP@localhost:{port}" in error_line(result)


@pytest.fixture()
def failing_scp() -> Iterator[int]:
    """A real pynetdicom Verification SCP (plain DICOM) that answers C-ECHO with 0xC000."""
    from pynetdicom import AE, evt

    ae = AE("FAILING")
    ae.add_supported_context(VERIFICATION)
    server = ae.start_server(
        ("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_ECHO, lambda event: 0xC000)]
    )
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()


def test_dimse_failure_status_is_64(failing_scp: int) -> None:
    proc = tdwii_echo("-v", "127.0.0.1", str(failing_scp))
    assert proc.returncode == 64, proc.stderr
    assert "status 0xC000 (Failure" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_plain_dicom_to_a_tls_port_is_62(dcmtk_tls: int) -> None:
    proc = tdwii_echo("localhost", str(dcmtk_tls))
    assert proc.returncode == 62
    line = error_line(proc)
    assert "closed the connection before answering" in line and "expect TLS" in line


def test_tls_to_a_plain_port_is_63(pki_dir: Path) -> None:
    proc, port = storescp(None)
    try:
        result = tdwii_echo(*mtls(pki_dir), "localhost", str(port))
    finally:
        proc.kill()
        proc.wait()
    assert result.returncode == 63
    line = error_line(result)
    assert "closed during the TLS handshake" in line or "does not speak TLS" in line
    assert "TLS on this port" in line or "plain" in line


def test_handshake_timeout_is_63_within_the_connect_timeout(pki_dir: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts (backlog), never answers
        start = time.monotonic()
        proc = tdwii_echo(*mtls(pki_dir), "-to", "0.5", "localhost", str(silent.getsockname()[1]))
        elapsed = time.monotonic() - start
    assert proc.returncode == 63
    assert "timed out" in error_line(proc)
    assert elapsed < 8


@pytest.fixture(scope="module")
def revoked_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("revoked") / "certs"
    pki.init_pki(directory)
    pki.revoke(directory, "worklistmanager")
    return directory


def test_revoked_server_refused_with_crl(revoked_pki: Path) -> None:
    proc, port = storescp(revoked_pki)
    try:
        crl = str(revoked_pki / "rootCA/rootCA.crl.pem")
        refused = tdwii_echo(*mtls(revoked_pki), "--crl", crl, "localhost", str(port))
        accepted = tdwii_echo(*mtls(revoked_pki), "localhost", str(port))
    finally:
        proc.kill()
        proc.wait()
    assert refused.returncode == 63
    assert "certificate is revoked" in error_line(refused)
    assert accepted.returncode == 0  # the CRL made the difference


def test_expired_server_certificate_is_63(pki_dir: Path, tmp_path: Path) -> None:
    ca_key, ca_cert = pki.load_ca(pki_dir)
    now = dt.datetime.now(dt.timezone.utc)
    key, cert = pki.make_leaf(
        ca_key,
        ca_cert,
        "oldserver",
        not_before=now - dt.timedelta(days=60),
        not_after=now - dt.timedelta(days=2),
    )
    pki.write_key(tmp_path / "old.key", key)
    pki.write_cert(tmp_path / "old.pem", cert)
    (tmp_path / "rootCA").mkdir()
    (tmp_path / CA).write_bytes((pki_dir / CA).read_bytes())
    proc, port = storescp(tmp_path, node="old")
    try:
        result = tdwii_echo(*mtls(pki_dir), "localhost", str(port))
    finally:
        proc.kill()
        proc.wait()
    assert result.returncode == 63
    assert "certificate has expired" in error_line(result)
