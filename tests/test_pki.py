"""tdwii_cli.pki as a library: layout, modes, extensions, real openssl/keytool, CRL, errors."""

from __future__ import annotations

import datetime as dt
import hashlib
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from conftest import require_tool
from tdwii_cli.errors import TdwiiError
from tdwii_cli.fileio import FileSpec, write_files
from tdwii_cli.pki.authority import init_pki, issue_node, load_ca, revoke, write_crl
from tdwii_cli.pki.certs import (
    key_problem,
    load_cert,
    local_hostname,
    make_leaf,
    verify_chain,
    write_cert,
)
from tdwii_cli.pki.crl import load_crl
from tdwii_cli.pki.keys import KeySpec, generate_key, load_key, write_key
from tdwii_cli.pki.layout import node_paths
from tdwii_cli.tls.certinfo import cert_info, one_line

LAYOUT = [
    "rootCA/rootCA.pem",
    "rootCA/rootCA.key",
    "rootCA/rootCA.p12",
    "rootCA/rootCA.crl.pem",
    "servers/worklistmanager/worklistmanager.pem",
    "servers/worklistmanager/worklistmanager.key",
    "servers/worklistmanager/worklistmanager.p12",
    "clients/workitemcreator/workitemcreator.pem",
    "clients/workitemcreator/workitemcreator.key",
    "clients/workitemcreator/workitemcreator.p12",
]
SERVER = "servers/worklistmanager/worklistmanager"
CLIENT = "clients/workitemcreator/workitemcreator"


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file under `directory`: content hash and mode."""
    return {
        str(p.relative_to(directory)): (
            hashlib.sha256(p.read_bytes()).hexdigest(),
            p.stat().st_mode,
        )
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def test_layout_is_exactly_the_documented_one(pki_dir: Path) -> None:
    files = sorted(str(p.relative_to(pki_dir)) for p in pki_dir.rglob("*") if p.is_file())
    assert files == sorted(LAYOUT)


def test_file_modes(pki_dir: Path) -> None:
    for rel in LAYOUT:
        mode = stat.S_IMODE((pki_dir / rel).stat().st_mode)
        if rel.endswith(".key") or (rel.endswith(".p12") and not rel.startswith("rootCA")):
            assert mode == 0o600, rel
        else:
            assert mode == 0o644, rel


def test_keys_are_0600_even_with_a_permissive_umask(tmp_path: Path) -> None:
    import os

    old = os.umask(0)
    try:
        init_pki(tmp_path / "certs")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "certs" / f"{SERVER}.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "certs/rootCA/rootCA.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "certs/rootCA/rootCA.pem").stat().st_mode) == 0o644


def test_ca_extensions(pki_dir: Path) -> None:
    ca = load_cert(pki_dir / "rootCA/rootCA.pem")
    bc = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and bc.value.ca and bc.value.path_length == 0
    ku = ca.extensions.get_extension_for_class(x509.KeyUsage)
    assert ku.critical and ku.value.key_cert_sign and ku.value.crl_sign
    ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    assert ca.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "tdwii Root CA"
    assert isinstance(ca.public_key(), ec.EllipticCurvePublicKey)
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650


@pytest.mark.parametrize(("rel", "cn"), [(SERVER, "worklistmanager"), (CLIENT, "workitemcreator")])
def test_leaf_extensions(pki_dir: Path, rel: str, cn: str) -> None:
    ca = load_cert(pki_dir / "rootCA/rootCA.pem")
    cert = load_cert(pki_dir / f"{rel}.pem")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == cn
    assert cert.issuer == ca.subject
    cert.verify_directly_issued_by(ca)
    assert cert.signature_hash_algorithm is not None
    assert cert.signature_hash_algorithm.name == "sha256"
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.SERVER_AUTH in eku and ExtendedKeyUsageOID.CLIENT_AUTH in eku
    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert bc.critical and not bc.value.ca
    ku = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert ku.digital_signature and not ku.key_cert_sign
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    dns = sans.get_values_for_type(x509.DNSName)
    ips = {str(ip) for ip in sans.get_values_for_type(x509.IPAddress)}
    assert "localhost" in dns and {"127.0.0.1", "::1"} <= ips
    host = local_hostname()
    if host:
        assert host in dns
    aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ski.digest
    cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
    # the private key belongs to the certificate
    key = load_key(pki_dir / f"{rel}.key")
    assert key.public_key() == cert.public_key()
    days = (cert.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)).days
    assert 396 <= days <= 398


def test_openssl_verify_accepts_both_leaves(pki_dir: Path) -> None:
    openssl = require_tool("openssl")
    proc = subprocess.run(
        [openssl, "verify", "-CAfile", "rootCA/rootCA.pem", f"{SERVER}.pem", f"{CLIENT}.pem"],
        cwd=pki_dir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"{SERVER}.pem: OK" in proc.stdout and f"{CLIENT}.pem: OK" in proc.stdout


def test_openssl_verify_rejects_leaf_of_other_ca(pki_dir: Path, other_ca_pki: Path) -> None:
    openssl = require_tool("openssl")
    proc = subprocess.run(
        [
            openssl,
            "verify",
            "-CAfile",
            pki_dir / "rootCA/rootCA.pem",
            other_ca_pki / f"{CLIENT}.pem",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0


def _keytool_list(store: Path, password: str = "secret") -> str:
    keytool = require_tool("keytool")
    proc = subprocess.run(
        [
            keytool,
            "-list",
            "-v",
            "-storetype",
            "PKCS12",
            "-keystore",
            store,
            "-storepass",
            password,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def test_keytool_reads_trust_store(pki_dir: Path) -> None:
    out = _keytool_list(pki_dir / "rootCA/rootCA.p12")
    assert "Your keystore contains 1 entry" in out
    assert "trustedCertEntry" in out
    assert "CN=tdwii Root CA" in out


@pytest.mark.parametrize("rel", [SERVER, CLIENT])
def test_keytool_reads_key_stores(pki_dir: Path, rel: str) -> None:
    out = _keytool_list(pki_dir / f"{rel}.p12")
    assert "PrivateKeyEntry" in out
    assert "Certificate chain length: 2" in out  # leaf + CA
    assert f"CN={Path(rel).name}" in out


def test_openssl_reads_key_store(pki_dir: Path) -> None:
    openssl = require_tool("openssl")
    proc = subprocess.run(
        [openssl, "pkcs12", "-in", f"{SERVER}.p12", "-passin", "pass:secret", "-nokeys"],
        cwd=pki_dir,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("BEGIN CERTIFICATE") == 2


def test_refuses_existing_pki_and_changes_nothing(pki_dir: Path) -> None:
    before = snapshot(pki_dir)
    with pytest.raises(TdwiiError, match="already holds a PKI"):
        init_pki(pki_dir)
    assert snapshot(pki_dir) == before


def test_force_replaces_everything(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    init_pki(directory)
    before = snapshot(directory)
    init_pki(directory, force=True)
    after = snapshot(directory)
    assert set(after) == set(before)
    assert all(after[name][0] != before[name][0] for name in before)


def test_rsa_pki(tmp_path: Path) -> None:
    result = init_pki(tmp_path / "certs", key_spec=KeySpec("rsa", 3072))
    assert result.key_spec.describe() == "RSA 3072"
    cert = load_cert(tmp_path / "certs" / f"{SERVER}.pem")
    key = cert.public_key()
    assert isinstance(key, rsa.RSAPublicKey) and key.key_size == 3072
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_encipherment
    ca = load_cert(tmp_path / "certs/rootCA/rootCA.pem")
    assert verify_chain(cert, [ca]) is None


def test_weak_rsa_refused() -> None:
    with pytest.raises(TdwiiError, match="too weak"):
        KeySpec("rsa", 1024)


def test_weak_key_only_on_purpose_and_flagged(pki_dir: Path) -> None:
    ca_key, ca_cert = load_ca(pki_dir)
    weak = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    _, cert = make_leaf(ca_key, ca_cert, "weak", key=weak)
    assert cert.public_key().key_size == 1024  # type: ignore[union-attr]
    problem = key_problem(cert)
    assert problem is not None and "1024" in problem


def test_extra_sans_and_no_defaults(pki_dir: Path) -> None:
    ca_key, ca_cert = load_ca(pki_dir)
    _, cert = make_leaf(
        ca_key, ca_cert, "tms", sans=["tms.example.org", "10.1.2.3"], default_sans=False
    )
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["tms.example.org"]
    assert [str(i) for i in sans.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]
    with pytest.raises(TdwiiError, match="neither a host name"):
        make_leaf(ca_key, ca_cert, "x", sans=["not a name"])


def test_verify_chain(pki_dir: Path, other_ca_pki: Path) -> None:
    ca = load_cert(pki_dir / "rootCA/rootCA.pem")
    assert verify_chain(load_cert(pki_dir / f"{CLIENT}.pem"), [ca]) is None
    assert verify_chain(ca, [ca]) is None
    foreign = load_cert(other_ca_pki / f"{CLIENT}.pem")
    assert verify_chain(foreign, [ca]) == "not issued by the given CA"
    ca_key, ca_cert = load_ca(pki_dir)
    past = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
    _, expired = make_leaf(
        ca_key, ca_cert, "old", not_before=past, not_after=past + dt.timedelta(days=30)
    )
    reason = verify_chain(expired, [ca])
    assert reason is not None and "expired" in reason
    assert cert_info(expired).validity() == "expired"
    assert "expired" in one_line(cert_info(expired))


def test_issue_node_and_refusal(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    init_pki(directory)
    result = issue_node(directory, "client", "watcher", sans=["watcher.local"])
    paths = node_paths(directory, "client", "watcher")
    assert result.files == [paths.cert, paths.key, paths.p12]
    cert = load_cert(paths.cert)
    ca = load_cert(directory / "rootCA/rootCA.pem")
    assert verify_chain(cert, [ca]) is None
    assert "watcher.local" in cert.extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    ).value.get_values_for_type(x509.DNSName)
    before = snapshot(directory)
    with pytest.raises(TdwiiError, match="already exists"):
        issue_node(directory, "client", "watcher")
    assert snapshot(directory) == before
    with pytest.raises(TdwiiError, match="not a usable node name"):
        issue_node(directory, "server", "../evil")


def test_revoke_writes_crl(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    init_pki(directory)
    issue_node(directory, "client", "watcher")
    revoked = load_cert(directory / "clients/watcher/watcher.pem")
    kept = load_cert(directory / f"{CLIENT}.pem")
    result = revoke(directory, "watcher")
    assert result.revoked_serial == revoked.serial_number
    crl = load_crl(directory / "rootCA/rootCA.crl.pem")
    ca = load_cert(directory / "rootCA/rootCA.pem")
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.get_revoked_certificate_by_serial_number(revoked.serial_number) is not None
    assert crl.get_revoked_certificate_by_serial_number(kept.serial_number) is None
    number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
    # reissuing keeps the entry and bumps the number
    write_crl(directory)
    crl2 = load_crl(directory / "rootCA/rootCA.crl.pem")
    assert crl2.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == number + 1
    assert crl2.get_revoked_certificate_by_serial_number(revoked.serial_number) is not None
    # openssl sees the same
    openssl = require_tool("openssl")
    text = subprocess.run(
        [openssl, "crl", "-in", directory / "rootCA/rootCA.crl.pem", "-noout", "-text"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
    listed = [
        int(line.split(":", 1)[1].strip(), 16)
        for line in text.splitlines()
        if line.strip().startswith("Serial Number:")
    ]
    assert listed == [revoked.serial_number]
    proc = subprocess.run(
        [
            openssl,
            "verify",
            "-crl_check",
            "-CAfile",
            directory / "rootCA/rootCA.pem",
            "-CRLfile",
            directory / "rootCA/rootCA.crl.pem",
            directory / "clients/watcher/watcher.pem",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0 and "revoked" in (proc.stdout + proc.stderr)


def test_revoke_unknown_and_ambiguous(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    init_pki(directory)
    with pytest.raises(TdwiiError, match="no node 'nobody'"):
        revoke(directory, "nobody")
    issue_node(directory, "server", "both")
    issue_node(directory, "client", "both")
    with pytest.raises(TdwiiError, match="both a server and a client"):
        revoke(directory, "both")
    revoke(directory, "clients/both")
    crl = load_crl(directory / "rootCA/rootCA.crl.pem")
    assert len(list(crl)) == 1


def test_encrypted_ca_key(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    init_pki(directory, ca_password=b"ca-pass-1")
    assert b"ENCRYPTED PRIVATE KEY" in (directory / "rootCA/rootCA.key").read_bytes()
    with pytest.raises(TdwiiError, match="is encrypted") as missing:
        issue_node(directory, "server", "n1")
    assert "--ca-password-file" in str(missing.value)
    with pytest.raises(TdwiiError, match="wrong password") as wrong:
        issue_node(directory, "server", "n1", ca_password=b"nope")
    assert "nope" not in str(wrong.value)
    assert not (directory / "servers/n1").exists()
    issue_node(directory, "server", "n1", ca_password=b"ca-pass-1")
    assert (directory / "servers/n1/n1.pem").is_file()


def test_load_errors(tmp_path: Path, pki_dir: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("hello\n")
    with pytest.raises(TdwiiError, match="is not a certificate"):
        load_cert(junk)
    with pytest.raises(TdwiiError, match="a private key, not a certificate"):
        load_cert(pki_dir / f"{SERVER}.key")
    with pytest.raises(TdwiiError, match="not a private key"):
        load_key(pki_dir / f"{SERVER}.pem")
    with pytest.raises(TdwiiError, match="not found"):
        load_cert(tmp_path / "missing.pem")
    with pytest.raises(TdwiiError, match="is a folder"):
        load_cert(tmp_path)
    # DER certificates load too
    der = tmp_path / "c.der"
    cert = load_cert(pki_dir / f"{SERVER}.pem")
    from cryptography.hazmat.primitives.serialization import Encoding

    der.write_bytes(cert.public_bytes(Encoding.DER))
    assert load_cert(der) == cert


def test_write_key_and_cert(tmp_path: Path, pki_dir: Path) -> None:
    key = generate_key()
    write_key(tmp_path / "k.key", key, b"pw")
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    with pytest.raises(TdwiiError, match="wrong password"):
        load_key(tmp_path / "k.key", b"bad")
    assert load_key(tmp_path / "k.key", b"pw").public_key() == key.public_key()
    cert = load_cert(pki_dir / f"{SERVER}.pem")
    write_cert(tmp_path / "c.pem", cert)
    assert stat.S_IMODE((tmp_path / "c.pem").stat().st_mode) == 0o644
    assert load_cert(tmp_path / "c.pem") == cert


def test_write_files_leaves_nothing_when_staging_fails(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("a file where a folder is needed")
    specs = [
        FileSpec(tmp_path / "new/a.pem", b"a"),
        FileSpec(tmp_path / "blocker/b.pem", b"b"),
    ]
    with pytest.raises(OSError):
        write_files(specs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_init_into_missing_parent_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TdwiiError, match="does not exist"):
        init_pki(tmp_path / "no" / "such" / "certs")
    assert list(tmp_path.iterdir()) == []


def test_force_init_forgets_old_revocations(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    init_pki(directory)
    revoke(directory, "workitemcreator")
    state = directory / "rootCA/rootCA.revoked.json"
    assert state.is_file()
    assert len(list(load_crl(directory / "rootCA/rootCA.crl.pem"))) == 1
    result = init_pki(directory, force=True)
    assert result.removed == [state] and not state.exists()
    crl = load_crl(directory / "rootCA/rootCA.crl.pem")
    assert len(list(crl)) == 0
    assert crl.is_signature_valid(load_cert(directory / "rootCA/rootCA.pem").public_key())  # type: ignore[arg-type]
