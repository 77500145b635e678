"""`tdwii pki ...` driven as a user would: `python -m tdwii_cli` in a subprocess."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_tool
from tdwii_cli.pki.authority import load_ca
from tdwii_cli.pki.certs import load_cert, make_leaf, write_cert
from tdwii_cli.pki.crl import load_crl

SERVER = "servers/worklistmanager/worklistmanager"
CLIENT = "clients/workitemcreator/workitemcreator"


def tdwii(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "tdwii_cli", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("tdwii: error: ")
    assert "Traceback" not in proc.stderr
    return lines[0]


def snapshot(directory: Path) -> dict[str, tuple[str, int, int]]:
    return {
        str(p.relative_to(directory)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mode,
            p.stat().st_mtime_ns,
        )
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def cli_pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """`tdwii pki init` run in a fresh folder (default --dir certs)."""
    cwd = tmp_path_factory.mktemp("cli")
    proc = tdwii("pki", "init", cwd=cwd)
    return cwd, proc


def test_init_writes_layout_and_prints_next_steps(
    cli_pki: tuple[Path, subprocess.CompletedProcess],
):
    cwd, proc = cli_pki
    assert proc.returncode == 0, proc.stderr
    certs = cwd / "certs"
    for rel in ("rootCA/rootCA.pem", "rootCA/rootCA.key", "rootCA/rootCA.p12"):
        assert (certs / rel).is_file()
    for node in (SERVER, CLIENT):
        for ext in ("pem", "key", "p12"):
            assert (certs / f"{node}.{ext}").is_file()
        assert f"certs/{node}.pem" in proc.stdout
    out = proc.stdout
    assert "0600" in out and "0644" in out
    assert "tdwii serve --mtls\n" in out
    assert "tdwii echo --mtls localhost 2762" in out
    assert (
        f"echoscu +tls certs/{CLIENT}.key certs/{CLIENT}.pem +cf certs/rootCA/rootCA.pem "
        "localhost 2762" in out
    )
    assert "+pz" in out
    assert (
        f"--key-store certs/{CLIENT}.p12 --key-store-pass secret "
        "--trust-store certs/rootCA/rootCA.p12 --trust-store-pass secret "
        "--tls-cipher TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256 --tls12" in out
    )
    # nothing secret or private on stdout/stderr
    assert "PRIVATE KEY" not in out + proc.stderr


def test_second_init_refuses_and_changes_nothing(
    cli_pki: tuple[Path, subprocess.CompletedProcess],
) -> None:
    cwd, _ = cli_pki
    before = snapshot(cwd / "certs")
    proc = tdwii("pki", "init", cwd=cwd)
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "already holds a PKI" in line and "--force" in line
    assert snapshot(cwd / "certs") == before
    # the same with different options: still nothing touched
    proc = tdwii("pki", "init", "--key-type", "rsa", "--days", "10", cwd=cwd)
    assert proc.returncode == 1
    assert snapshot(cwd / "certs") == before


def test_init_force_with_rsa_prints_rsa_cipher(tmp_path: Path) -> None:
    assert tdwii("pki", "init", cwd=tmp_path).returncode == 0
    old = (tmp_path / f"certs/{SERVER}.pem").read_bytes()
    proc = tdwii("pki", "init", "--force", "--key-type", "rsa", "--rsa-bits", "3072", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "RSA 3072" in proc.stdout
    assert "--tls-cipher TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 --tls12" in proc.stdout
    assert "+pz" not in proc.stdout
    cert = load_cert(tmp_path / f"certs/{SERVER}.pem")
    assert cert.public_key().key_size == 3072  # type: ignore[union-attr]
    assert (tmp_path / f"certs/{SERVER}.pem").read_bytes() != old
    openssl = require_tool("openssl")
    verify = subprocess.run(
        [openssl, "verify", "-CAfile", "rootCA/rootCA.pem", f"{SERVER}.pem", f"{CLIENT}.pem"],
        cwd=tmp_path / "certs",
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert verify.returncode == 0, verify.stderr


def test_init_options(tmp_path: Path) -> None:
    proc = tdwii(
        "pki",
        "init",
        "--dir",
        tmp_path / "pki",
        "--days",
        "90",
        "--ca-days",
        "400",
        "--org",
        "Radiotherapy Dept",
        "--san",
        "tms.example.org",
        "--san",
        "10.0.0.7",
        "--p12-password",
        "changeit",
    )
    assert proc.returncode == 0, proc.stderr
    ca = load_cert(tmp_path / "pki/rootCA/rootCA.pem")
    leaf = load_cert(tmp_path / f"pki/{SERVER}.pem")
    assert (ca.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).days in (399, 400)
    assert (leaf.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).days in (89, 90)
    assert "O=Radiotherapy Dept" in leaf.subject.rfc4514_string()
    text = subprocess.run(
        [require_tool("openssl"), "x509", "-in", tmp_path / f"pki/{SERVER}.pem", "-noout", "-ext",
         "subjectAltName"],
        capture_output=True, text=True, timeout=30, check=True,
    ).stdout  # fmt: skip
    assert "DNS:tms.example.org" in text and "IP Address:10.0.0.7" in text
    # a custom --dir shows explicit paths; a custom password is not echoed
    assert f"--ca {tmp_path / 'pki/rootCA/rootCA.pem'}" in proc.stdout
    assert "changeit" not in proc.stdout + proc.stderr
    assert '--key-store-pass "$P12_PASSWORD"' in proc.stdout
    keytool = require_tool("keytool")
    listing = subprocess.run(
        [keytool, "-list", "-keystore", tmp_path / f"pki/{CLIENT}.p12", "-storepass", "changeit"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listing.returncode == 0 and "PrivateKeyEntry" in listing.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--key-type", "rsa", "--rsa-bits", "1024"], "too weak"),
        (["--rsa-bits", "4096"], "--rsa-bits needs --key-type rsa"),
        (["--dir", "no/such/parent/certs"], "does not exist"),
        (["--san", "bad name!"], "neither a host name nor an IP address"),
        (["--ca-password-file", "missing.txt"], "not found"),
    ],
)
def test_init_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    proc = tdwii("pki", "init", *args, cwd=tmp_path)
    assert proc.returncode == 1
    assert message in one_error_line(proc)
    assert list(tmp_path.iterdir()) == []


def test_wrong_ca_password_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "ca.pw").write_text("right horse battery\n")
    (tmp_path / "bad.pw").write_text("wrong staple\n")
    proc = tdwii("pki", "init", "--ca-password-file", "ca.pw", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    before = snapshot(tmp_path / "certs")

    proc = tdwii("pki", "issue", "server", "tms", "--ca-password-file", "bad.pw", cwd=tmp_path)
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "wrong password for the CA key" in line
    assert "staple" not in proc.stderr + proc.stdout and "horse" not in proc.stderr

    proc = tdwii("pki", "issue", "server", "tms", cwd=tmp_path)
    assert proc.returncode == 1
    assert "--ca-password-file" in one_error_line(proc)

    proc = tdwii("pki", "revoke", "workitemcreator", "--ca-password-file", "bad.pw", cwd=tmp_path)
    assert proc.returncode == 1
    assert "wrong password" in one_error_line(proc)
    assert snapshot(tmp_path / "certs") == before

    proc = tdwii("pki", "issue", "server", "tms", "--ca-password-file", "ca.pw", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "certs/servers/tms/tms.p12").is_file()


def test_issue_show_revoke_crl(tmp_path: Path) -> None:
    assert tdwii("pki", "init", cwd=tmp_path).returncode == 0
    proc = tdwii("pki", "issue", "client", "watcher", "--key-type", "rsa", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "certs/clients/watcher/watcher.p12" in proc.stdout
    watcher = tmp_path / "certs/clients/watcher/watcher.pem"
    serial = load_cert(watcher).serial_number

    proc = tdwii("pki", "show", watcher, "--ca", "certs/rootCA/rootCA.pem", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "CN=watcher" in out and "RSA 2048" in out and "verifies against the given CA" in out
    assert "DNS:localhost" in out and "IP:127.0.0.1" in out and "IP:::1" in out
    assert f"{serial:X}" in out and "serverAuth, clientAuth" in out
    assert "days left" in out

    proc = tdwii("pki", "revoke", "watcher", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert f"{serial:X}" in proc.stdout
    crl = load_crl(tmp_path / "certs/rootCA/rootCA.crl.pem")
    assert crl.get_revoked_certificate_by_serial_number(serial) is not None

    proc = tdwii("pki", "crl", cwd=tmp_path)
    assert proc.returncode == 0 and f"{serial:X}" in proc.stdout

    proc = tdwii("pki", "show", "--crl", "certs/rootCA/rootCA.crl.pem", watcher, cwd=tmp_path)
    assert proc.returncode == 1 and "REVOKED" in proc.stdout
    assert "revoked" in one_error_line(proc)

    proc = tdwii("pki", "revoke", "ghost", cwd=tmp_path)
    assert proc.returncode == 1 and "no node 'ghost'" in one_error_line(proc)


def test_show_rejects_non_certificate(pki_dir: Path, tmp_path: Path) -> None:
    proc = tdwii("pki", "show", pki_dir / f"{SERVER}.key")
    assert proc.returncode == 1
    assert "is not a certificate" in one_error_line(proc)
    assert proc.stdout == ""
    (tmp_path / "notes.txt").write_text("just text\n")
    proc = tdwii("pki", "show", pki_dir / f"{SERVER}.pem", tmp_path / "notes.txt")
    assert proc.returncode == 1 and "notes.txt is not a certificate" in one_error_line(proc)
    proc = tdwii("pki", "show", tmp_path / "absent.pem")
    assert proc.returncode == 1 and "not found" in one_error_line(proc)


def test_show_chain_failure_with_other_ca(pki_dir: Path, other_ca_pki: Path) -> None:
    proc = tdwii(
        "pki", "show", other_ca_pki / f"{CLIENT}.pem", "--ca", pki_dir / "rootCA/rootCA.pem"
    )
    assert proc.returncode == 1
    assert "does not verify" in proc.stdout
    assert "chain does not verify" in one_error_line(proc)


def test_show_expired_and_expiring(pki_dir: Path, tmp_path: Path) -> None:
    ca_key, ca_cert = load_ca(pki_dir)
    now = dt.datetime.now(dt.timezone.utc)
    _, expired = make_leaf(
        ca_key,
        ca_cert,
        "old",
        not_before=now - dt.timedelta(days=400),
        not_after=now - dt.timedelta(days=3),
    )
    _, soon = make_leaf(ca_key, ca_cert, "soon", days=10)
    write_cert(tmp_path / "old.pem", expired)
    write_cert(tmp_path / "soon.pem", soon)

    proc = tdwii("pki", "show", tmp_path / "soon.pem")
    assert proc.returncode == 0, proc.stderr
    assert "only 9 days left" in proc.stdout or "only 10 days left" in proc.stdout
    assert "expires in" in proc.stderr  # a warning, not an error

    proc = tdwii("pki", "show", tmp_path / "old.pem", "--ca", pki_dir / "rootCA/rootCA.pem")
    assert proc.returncode == 1
    assert "EXPIRED" in proc.stdout
    assert "expired on" in one_error_line(proc)


def test_show_weak_key_fails(pki_dir: Path, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import rsa

    ca_key, ca_cert = load_ca(pki_dir)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    _, cert = make_leaf(ca_key, ca_cert, "weak", key=weak)
    write_cert(tmp_path / "weak.pem", cert)
    proc = tdwii("pki", "show", tmp_path / "weak.pem")
    assert proc.returncode == 1 and "too weak" in proc.stdout
    assert "1024" in one_error_line(proc)


def test_missing_pki_folder_is_one_line(tmp_path: Path) -> None:
    for args in (["issue", "server", "x"], ["revoke", "x"], ["crl"]):
        proc = tdwii("pki", *args, "--dir", tmp_path / "nowhere")
        assert proc.returncode == 1
        assert "not found" in one_error_line(proc)
    assert not (tmp_path / "nowhere").exists()


def test_help_does_not_import_heavy_modules() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tdwii_cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "pki" in proc.stdout
    imported = {
        line.rsplit("|", 1)[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    assert "typer" in imported  # the check itself works
    assert not imported & {"cryptography", "pynetdicom", "pydicom"}


def test_pki_help_does_not_import_cryptography() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tdwii_cli", "pki", "init", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--key-type" in proc.stdout and "--ca-password-file" in proc.stdout
    assert "cryptography" not in proc.stderr


def test_the_dcmtk_line_of_init_runs_dcmtk_not_pynetdicoms_script(tmp_path: Path) -> None:
    """A venv puts pynetdicom's `echoscu` script first in PATH: `pki init` still prints DCMTK's
    tool by its path, and that line, pasted, echoes a running `tdwii serve --mtls`."""
    import shlex

    from conftest import start_tdwii_server
    from tdwii_cli.cli.dcmtk import TELL_APART, dcmtk_tool

    dcmtk = Path(require_tool("echoscu"))
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    script = venv_bin / "echoscu"
    script.write_text("#!/usr/bin/env python3\nimport sys\nsys.exit(2)  # pynetdicom's\n")
    script.chmod(0o755)
    env = {**os.environ, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}", "COLUMNS": "300"}
    init = subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "pki", "init"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert init.returncode == 0, init.stderr
    (line,) = [x.strip() for x in init.stdout.splitlines() if "+tls" in x]
    assert line.startswith(f"{dcmtk} +tls "), line
    server = start_tdwii_server(tmp_path)
    try:
        words = shlex.split(line.replace("localhost 2762", f"localhost {server.port}"))
        echoed = subprocess.run(words, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert echoed.returncode == 0, echoed.stdout + echoed.stderr
    finally:
        server.stop()
    # where DCMTK is missing, the note says how to tell the two apart
    assert dcmtk_tool("echoscu", search_path=str(venv_bin), usual=()) is None
    assert dcmtk_tool("echoscu", search_path=f"{venv_bin}:{dcmtk.parent}") == dcmtk
    version = subprocess.run([str(dcmtk), "--version"], capture_output=True, text=True)
    assert version.stdout.startswith("$dcmtk: echoscu v3")  # what TELL_APART tells to look for
    assert "$dcmtk: NAME v3" in TELL_APART


def test_issue_binds_the_new_certificate_to_an_ae_title_in_one_step(tmp_path: Path) -> None:
    assert tdwii("pki", "init", cwd=tmp_path).returncode == 0
    made = tdwii(
        *("pki", "issue", "client", "tdd1", "--ae-title", "TDD1", "--roles", "perform,query"),
        *("--ae-config", "ae.json", "--ae-address", "127.0.0.1:11113"),
        cwd=tmp_path,
    )
    assert made.returncode == 0, made.stderr
    assert "TDD1 written to a new ae.json: certificates CN=tdd1; roles perform, query" in (
        made.stdout
    )
    entry = json.loads((tmp_path / "ae.json").read_text())[0]
    assert entry == {
        "AETitle": "TDD1",
        "Certificates": ["CN=tdd1"],
        "Roles": ["perform", "query"],
        "IPAddr": "127.0.0.1",
        "Port": 11113,
        "mTLS": True,
    }
    shown = tdwii(
        *("pki", "show", "certs/clients/tdd1/tdd1.pem", "--ae-config", "ae.json"), cwd=tmp_path
    )
    assert shown.returncode == 0
    assert "TDD1: roles perform, query (by CN=tdd1)" in shown.stdout
    other = tdwii(*("pki", "show", f"certs/{CLIENT}.pem", "--ae-config", "ae.json"), cwd=tmp_path)
    assert "matches no entry" in other.stdout


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("--ae-title", "TDD9"), "--ae-title, --roles and --ae-address need --ae-config"),
        (("--ae-config", "ae.json"), "--ae-config needs --ae-title"),
        (("--ae-config", "ae.json", "--ae-title", "TDD9", "--roles", "drive"), "unknown role"),
        (("--ae-config", "ae.json", "--ae-title", "A-TITLE-OF-20-CHARS"), "--ae-title"),
        (("--ae-config", "broken.json", "--ae-title", "TDD9"), "not valid JSON"),
    ],
)
def test_a_bad_binding_is_one_line_and_makes_no_certificate(
    tmp_path: Path, args: tuple[str, ...], words: str
) -> None:
    assert tdwii("pki", "init", cwd=tmp_path).returncode == 0
    (tmp_path / "broken.json").write_text("[{")
    before = snapshot(tmp_path)
    proc = tdwii("pki", "issue", "client", "tdd9", *args, cwd=tmp_path)
    assert proc.returncode == 1
    assert words in one_error_line(proc)
    assert snapshot(tmp_path) == before
