"""`tdwii echo` over TLS end to end: every handshake refusal a user meets, with its exit code
and its one error line, against real peers (DCMTK storescp, openssl s_server, a silent
listener); a profile negotiated with DCMTK; our own certificate refused before connecting.

The same refusals at the library level (both sides, typed errors): tests/test_tls.py and
tests/test_association.py. Results, logs, AE titles and the exit codes 0/2/60/61/62/64:
tests/test_echo.py. Peers and helpers (storescp_peer, openssl_peer, run_echo_cli, ...):
tests/conftest.py.
"""

from __future__ import annotations

import datetime as dt
import shutil
import socket
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
    run_echo_cli,
    storescp_peer,
    write_leaf,
)

# ------------------------------------------------------- refusals seen by `tdwii echo`


def test_untrusted_client_certificate_is_exit_63(
    pki_dir: Path, other_ca_pki: Path, dcmtk_tls_peer: int
) -> None:
    args = mtls_args(other_ca_pki, ca=pki_dir / PKI_CA)  # we trust the server; it does not trust us
    proc = run_echo_cli(*args, "localhost", str(dcmtk_tls_peer))
    assert proc.returncode == 63
    # the server's alert ("unknown CA") or, when TLS 1.3 loses it, its close right after
    line = one_error_line(proc)
    assert "does not trust" in line or "did not accept our certificate" in line


def test_no_client_certificate_is_exit_63(pki_dir: Path, dcmtk_tls_peer: int) -> None:
    proc = run_echo_cli("--tls", "-ca", str(pki_dir / PKI_CA), "localhost", str(dcmtk_tls_peer))
    assert proc.returncode == 63
    line = one_error_line(proc)
    assert "requires a client certificate" in line or "no client certificate" in line


def test_tls11_only_server_is_refused(pki_dir: Path) -> None:
    cert, key = pki_dir / f"{PKI_SERVER}.pem", pki_dir / f"{PKI_SERVER}.key"
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
    now = dt.datetime.now(dt.timezone.utc)
    if when == "past":
        span = (now - dt.timedelta(days=60), now - dt.timedelta(days=2))
    else:
        span = (now + dt.timedelta(days=1), now + dt.timedelta(days=9))
    write_leaf(tmp_path, pki_dir, "old", not_before=span[0], not_after=span[1])
    (tmp_path / "rootCA").mkdir()
    shutil.copyfile(pki_dir / PKI_CA, tmp_path / PKI_CA)
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
    assert "closed the connection without answering" in line and "expect TLS" in line


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
    write_leaf(tmp, pki_root, "bad", **kw)
    return mtls_args(tmp, node="bad", ca=pki_root / PKI_CA)


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
        args[-1] = str(pki_dir / f"{PKI_CLIENT}.key")  # someone else's key
    # a closed port: the error must be about the certificate, not the network
    proc = run_echo_cli(*args, "127.0.0.1", str(free_port()))
    assert proc.returncode == 1
    assert words in one_error_line(proc)


# ---------------------------------------------------------------------- profiles


def test_profile_ex_negotiates_tls12(pki_dir: Path) -> None:
    with storescp_peer(pki_dir, "+pz") as port:
        proc = run_echo_cli(
            *mtls_args(pki_dir), "--tls-profile", "bcp195-ex", "localhost", str(port)
        )
    assert proc.returncode == 0, proc.stderr
    assert "TLSv1.2" in proc.stdout and "ECDHE-ECDSA-AES" in proc.stdout
