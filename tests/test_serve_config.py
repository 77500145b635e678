"""`tdwii serve`'s INI file never drops a setting silently: the replaced project's files (keys
under [DEFAULT], move destinations as other sections) work; a server key under another
section, an unknown key or an unknown section is refused with one line naming the file,
the section and the key; a missing TLS file named by the INI is reported with its key;
every key is documented with its command-line twin in `serve --help` and the README."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import (
    PKI_CA,
    PKI_SERVER,
    free_port,
    mtls_args,
    one_error_line,
    run_echo_cli,
)

ROOT = Path(__file__).resolve().parents[1]

# upsscp.py's own default.ini (tdwii_plus_examples), as its users have it
UPSSCP_DEFAULT_INI = """# Default configuration file for upsscp.py

## Application settings
[DEFAULT]
    # Our AE Title
    ae_title: UPSSCP
    # Our listen port
    port: {port}
    # Our maximum PDU size; 0 for unlimited
    max_pdu: 16382
    # The ACSE, DIMSE and network timeouts (in seconds)
    acse_timeout: 30
    dimse_timeout: 30
    network_timeout: 30
    # The address of the network interface to listen on
    # If unset, listen on all interfaces
    bind_address: 127.0.0.1
    instance_location: ./data_storage/ups_instances
    database_location: ./data_storage/ups_instances.sqlite
    log_identifier: True
{extra}

## Move Destinations
# The AE title of the move destination, as ASCII
[STORESCP]
    address: 127.0.0.1
    port: 11113
"""


def serve(workdir: Path, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "serve", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(workdir: Path, ini: Path) -> tuple[subprocess.Popen[str], list[str]]:
    """`tdwii serve -c INI -v` until it listens; its stderr lines so far."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "tdwii_cli", "serve", "-c", str(ini), "-v"],
        cwd=workdir,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line)
        if "listening on" in line:
            return proc, lines
    raise AssertionError(f"tdwii serve exited {proc.wait()}: {''.join(lines)}")


def stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    proc.communicate(timeout=30)


def test_mutual_tls_under_a_named_section_is_refused_never_plain(
    tmp_path: Path, pki_dir: Path
) -> None:
    (tmp_path / "certs").symlink_to(pki_dir)
    port = free_port()
    ini = tmp_path / "tdwii.ini"
    ini.write_text(f"[upsscp]\nmutual_tls: true\nport: {port}\nbind_address: 127.0.0.1\n")
    proc = serve(tmp_path, "-c", str(ini))
    assert proc.returncode == 1, proc.stderr
    line = one_error_line(proc)
    assert str(ini) in line and "[upsscp]" in line and "mutual_tls" in line
    assert "go under [DEFAULT]" in line
    plain = run_echo_cli("-ta", "2", "127.0.0.1", str(port))
    assert plain.returncode == 60  # nothing listens, plain or otherwise


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("[DEFAULT]\nmutal_tls: true\n", ["[DEFAULT] unknown key mutal_tls", "mutual_tls?"]),
        ("[DEFAULT]\nport: 1\n[STORESCP]\naddress: x\nprot: 1\n", ["[STORESCP]", "prot"]),
        ("[DEFAULT]\n[this section name is far too long]\naddress: x\n", ["longer than 16"]),
        ("[DEFAULT]\n[STORESCP]\naddress: x\nport: many\n", ["[STORESCP] port", "'many'"]),
        ("mutual_tls: true\n", ["not an INI file"]),
    ],
)
def test_unknown_keys_and_sections_are_one_line(
    tmp_path: Path, text: str, words: list[str]
) -> None:
    ini = tmp_path / "bad.ini"
    ini.write_text(text)
    proc = serve(tmp_path, "-c", str(ini), "--port", "0")
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert str(ini) in line and all(w in line for w in words), line


def test_the_replaced_projects_default_ini_runs_with_mutual_tls(
    tmp_path: Path, pki_dir: Path
) -> None:
    (tmp_path / "certs").symlink_to(pki_dir)
    port = free_port()
    extra = (
        "    mutual_tls: True\n"
        f"    ca_certificate: certs/{PKI_CA}\n"
        f"    certificate: certs/{PKI_SERVER}.pem\n"
        f"    private_key: certs/{PKI_SERVER}.key"
    )
    ini = tmp_path / "default.ini"
    ini.write_text(UPSSCP_DEFAULT_INI.format(port=port, extra=extra))
    proc, lines = start(tmp_path, ini)
    try:
        text = "".join(lines)
        assert f"UPSSCP listening on 127.0.0.1:{port} (mutual TLS)" in text, text
        assert "[STORESCP]: a move destination of upsscp.py, unused" in text
        assert run_echo_cli(*mtls_args(pki_dir), "localhost", str(port)).returncode == 0
        plain = run_echo_cli("-ta", "5", "127.0.0.1", str(port))
        assert plain.returncode != 0  # a plain client is not served
        db = tmp_path / "data_storage" / "ups_instances.sqlite"
        assert db.stat().st_mode & 0o777 == 0o600
        assert db.parent.stat().st_mode & 0o777 == 0o700  # made by tdwii
    finally:
        stop(proc)


def test_a_missing_tls_file_from_the_ini_names_its_key(tmp_path: Path, pki_dir: Path) -> None:
    (tmp_path / "certs").symlink_to(pki_dir)
    ini = tmp_path / "upsscp.ini"
    ini.write_text("[DEFAULT]\nmutual_tls: true\nca_certificate: certs/rootCA/ourCA.pem\nport: 0\n")
    proc = serve(tmp_path, "-c", str(ini))
    assert proc.returncode == 1
    line = one_error_line(proc)
    assert "certs/rootCA/ourCA.pem (from ca_certificate in" in line and str(ini) in line, line
    assert "[DEFAULT]) not found" in line
    # the same path from the command line names the option instead
    cli = serve(tmp_path, "--mtls", "--ca", "certs/rootCA/ourCA.pem", "--port", "0")
    assert "(from --ca) not found" in one_error_line(cli)


def test_every_key_is_documented_with_its_option() -> None:
    from tdwii_cli.cli.app import load_command
    from tdwii_cli.server.inikeys import IGNORED, KEYS, markdown_table

    helped = subprocess.run(
        [sys.executable, "-m", "tdwii_cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert helped.returncode == 0
    for key in KEYS:
        assert re.search(rf"\b{key.name}\s+{re.escape(key.option)}:", helped.stdout), key.name
    assert all(name in helped.stdout for name in IGNORED)
    options = {o for p in load_command("serve").params for o in (*p.opts, *p.secondary_opts)}
    for key in KEYS:
        for option in key.option.split(" / "):
            assert option in options, (key.name, option)
    assert markdown_table() in (ROOT / "README.md").read_text()
