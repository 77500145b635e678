"""`tdwii echo` as a user runs it against real peers: the result line, counts, logs, help,
imports, AE titles, and the exit codes 0/2/60/61/62/64.

TLS refusals (63), their words, profiles and own-certificate checks: tests/test_echo_tls.py.
Peers: DCMTK storescp (+tls, mutual TLS; fixtures and helpers in conftest.py), `tdwii serve`,
an in-process pynetdicom Verification SCP, a Python TLS server that answers with A-ABORT
(tests/peers.py).
"""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import (
    free_port,
    mtls_args,
    one_error_line,
    run_echo_cli,
    server_ssl_context,
    storescp_peer,
)
from peers import A_ABORT, OneShotPeer

VERIFICATION = "1.2.840.10008.1.1"

# ---------------------------------------------------------------------- results and logs


def test_count_and_repeat_result_line_and_log(pki_dir: Path, dcmtk_tls_peer: int) -> None:
    proc = run_echo_cli(
        *mtls_args(pki_dir), "-v", "--count", "4", "--repeat", "3", "localhost", str(dcmtk_tls_peer)
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.strip().splitlines()
    assert len(out) == 1  # one short result on stdout, the log on stderr
    assert f"ANY-SCP@localhost:{dcmtk_tls_peer} over TLSv1.3 " in out[0]
    assert "12 sent, status 0x0000 (Success)" in out[0]
    low, mid, high = map(
        float, re.search(r"min ([\d.]+) median ([\d.]+) max ([\d.]+)", out[0]).groups()
    )
    assert 0 < low <= mid <= high
    assert proc.stderr.count("TLS handshake ok, TLSv1.3") == 3
    assert "TLS_AES" in proc.stderr  # the cipher is logged with the version
    assert "CN=worklistmanager" in proc.stderr  # and who the peer is
    assert proc.stderr.count("association released") == 3
    assert proc.stderr.count("association accepted, TDWII -> ANY-SCP") == 3
    assert (
        len(re.findall(r"C-ECHO id=[1-4] status 0x0000 \(Success\) in [\d.]+ ms", proc.stderr))
        == 12
    )
    assert "\x1b[" not in proc.stderr + proc.stdout  # plain lines when piped


def test_quiet_by_default(pki_dir: Path, dcmtk_tls_peer: int) -> None:
    proc = run_echo_cli(*mtls_args(pki_dir), "localhost", str(dcmtk_tls_peer))
    assert proc.returncode == 0
    assert proc.stderr == ""
    assert "1 sent, status 0x0000 (Success)" in proc.stdout


def test_debug_shows_the_full_peer_certificate(pki_dir: Path, dcmtk_tls_peer: int) -> None:
    proc = run_echo_cli(*mtls_args(pki_dir), "-d", "localhost", str(dcmtk_tls_peer))
    assert proc.returncode == 0, proc.stderr
    detail = [line for line in proc.stderr.splitlines() if "peer certificate subject=" in line]
    assert len(detail) == 1
    assert "CN=worklistmanager" in detail[0] and "DNS:localhost" in detail[0]
    assert re.search(r"sha256=([0-9A-F]{2}:){31}[0-9A-F]{2}", detail[0])


@pytest.mark.parametrize("peer", ["dcmtk", "tdwii-serve"])
def test_many_echoes_on_one_association(
    pki_dir: Path, peer: str, request: pytest.FixtureRequest
) -> None:
    """300 C-ECHOs on each of 2 associations, against fast DCMTK and against `tdwii serve`
    (mutual TLS both): none lost (a lost response would wait -td 5 s)."""
    if peer == "dcmtk":
        port = request.getfixturevalue("dcmtk_tls_peer")
    else:
        port = request.getfixturevalue("tdwii_server").port
    start = time.monotonic()
    proc = run_echo_cli(
        *mtls_args(pki_dir), "-td", "5", "--count", "300", "--repeat", "2", "localhost", str(port)
    )
    assert proc.returncode == 0, proc.stderr
    assert "600 sent, status 0x0000 (Success)" in proc.stdout
    assert time.monotonic() - start < 20


def test_help_documents_the_exit_codes() -> None:
    proc = run_echo_cli("--help", timeout=30, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 0
    for code in ("60", "61", "62", "63", "64"):
        assert re.search(rf"\b{code}\b", proc.stdout), code
    for option in ("--count", "--repeat", "-aet", "-aec", "-to", "-ta", "-td", "--mtls", "--crl"):
        assert option in proc.stdout


def test_one_shot_echo_imports_no_pynetdicom_pydicom_or_cryptography(
    pki_dir: Path, dcmtk_tls_peer: int
) -> None:
    proc = run_echo_cli(
        *mtls_args(pki_dir), "localhost", str(dcmtk_tls_peer), python_flags=("-X", "importtime")
    )
    assert proc.returncode == 0, proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if "|" in line}
    assert "tdwii_cli.client.echo" in imported  # the import log is really there
    heavy = ("pynetdicom", "pydicom", "cryptography")  # the own-certificate check reads DER
    assert not {m for m in imported if m.split(".")[0] in heavy}


# ---------------------------------------------------------------------- AE titles
# (an empty called AE title used to reach DCMTK, which hung up, and came back as a TLS
# certificate error, exit 63)


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
    proc = run_echo_cli(*mtls_args(pki_dir), option, value, "127.0.0.1", str(free_port()))
    assert proc.returncode == 2, proc.stderr
    assert words in " ".join(proc.stderr.replace("│", " ").split())  # rich box, wrapped
    assert "Traceback" not in proc.stderr


def test_sixteen_character_called_ae_title_reaches_dcmtk(
    pki_dir: Path, dcmtk_tls_peer: int
) -> None:
    title = "SIXTEEN-CHARS-AE"
    assert len(title) == 16
    proc = run_echo_cli(
        *mtls_args(pki_dir), "-aet", "MY-SCU", "-aec", title, "localhost", str(dcmtk_tls_peer)
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{title}@localhost" in proc.stdout and "0x0000" in proc.stdout


def test_padded_ae_title_is_trimmed(pki_dir: Path, dcmtk_tls_peer: int) -> None:
    proc = run_echo_cli(
        *mtls_args(pki_dir), "-aec", "  STORESCP  ", "-v", "localhost", str(dcmtk_tls_peer)
    )
    assert proc.returncode == 0, proc.stderr
    assert "STORESCP@localhost" in proc.stdout and "  STORESCP" not in proc.stdout


# ---------------------------------------------------------------------- exit codes 60 61 62 64


def test_closed_port_is_exit_60(pki_dir: Path) -> None:
    proc = run_echo_cli(*mtls_args(pki_dir), "127.0.0.1", str(free_port()))
    assert proc.returncode == 60
    assert "cannot reach" in one_error_line(proc)


def test_rejected_association_is_61(pki_dir: Path) -> None:
    with storescp_peer(pki_dir, "--refuse") as port:
        proc = run_echo_cli(*mtls_args(pki_dir), "localhost", str(port))
    assert proc.returncode == 61
    assert f"association rejected by ANY-SCP@localhost:{port}" in one_error_line(proc)


def _ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
def test_a_abort_over_tls_is_62_not_a_certificate_error(pki_dir: Path, host: str) -> None:
    """A Python TLS server with the pki server certificate (client certificate required)
    answers the A-ASSOCIATE-RQ with an A-ABORT: exit 62 "aborted" (it was 63 "did not accept
    our certificate"). The handshake passes by address only because the default SANs hold
    127.0.0.1 and ::1."""
    if host == "::1" and not _ipv6_loopback():
        pytest.skip("no IPv6 loopback here")
    # it reads the whole A-ASSOCIATE-RQ (no RST when it closes), answers, and lets the client
    # read the abort and hang up first
    peer = OneShotPeer(A_ABORT, ssl_context=server_ssl_context(pki_dir), read="pdu", host=host)
    try:
        proc = run_echo_cli(*mtls_args(pki_dir), "-ta", "5", host, str(peer.port))
    finally:
        peer.done()
    assert peer.tls_version is not None, peer.error
    assert peer.tls_version.startswith("TLSv1."), peer.error  # the handshake passed on the server
    assert proc.returncode == 62, proc.stderr
    assert "A-ABORT" in proc.stderr and "certificate" not in proc.stderr
    assert "Traceback" not in proc.stderr


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
    proc = run_echo_cli("-v", "127.0.0.1", str(failing_scp))
    assert proc.returncode == 64, proc.stderr
    assert "status 0xC000 (Failure" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_a_source_address_not_on_this_host_is_one_line_exit_1() -> None:
    proc = run_echo_cli("-sa", "192.0.2.1", "127.0.0.1", str(free_port()))
    assert proc.returncode == 1
    assert one_error_line(proc) == (
        "tdwii: error: cannot connect from 192.0.2.1: not an address of this host"
    )


def test_a_source_address_on_this_host_is_used() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)
        port = listener.getsockname()[1]
        seen: list[str] = []

        def accept() -> None:
            conn, address = listener.accept()
            seen.append(address[0])
            conn.close()  # no DICOM here: the client reports that, the address is what counts

        thread = threading.Thread(target=accept)
        thread.start()
        run_echo_cli("-sa", "127.0.0.2", "-to", "5", "127.0.0.1", str(port))
        thread.join(10)
    assert seen == ["127.0.0.2"]
