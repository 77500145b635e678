"""The certificates `tdwii pki` issues, in real TLS where the PKI itself is what is tested:
the default IP SANs, revoking one issued node with the CRL (the others still get in), and
DCMTK storescp/echoscu with the issued certificates.

Mutual TLS with the issued certificates and the refusals (another CA, either side) are
tested at the library level in tests/test_tls.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import (
    PKI_CA,
    PKI_CLIENT,
    client_ssl_context,
    require_tool,
    server_ssl_context,
    storescp_peer,
)
from peers import handshake
from tdwii_cli.pki.authority import init_pki, issue_node, revoke


@pytest.mark.parametrize("hostname", ["127.0.0.1", "::1"])
def test_server_certificate_matches_ip_sans(pki_dir: Path, hostname: str) -> None:
    """The server certificate's default SANs hold the loopback addresses: a plain Python
    client that checks the address accepts it, in mutual TLS."""
    out = handshake(server_ssl_context(pki_dir), client_ssl_context(pki_dir), hostname)
    assert out.client_error is None and out.server_error is None
    assert out.client_info is not None  # the connection carried data both ways
    assert out.client_cn == "workitemcreator"


def test_revoked_client_is_refused_with_the_crl(tmp_path: Path) -> None:
    directory = tmp_path / "certs"
    init_pki(directory)
    issue_node(directory, "client", "watcher")
    revoke(directory, "watcher")
    server = server_ssl_context(directory, crl=directory / "rootCA/rootCA.crl.pem")
    # a client that is not revoked still gets in with the CRL loaded
    allowed = handshake(server, client_ssl_context(directory))
    assert allowed.client_error is None and allowed.server_error is None
    assert allowed.client_cn == "workitemcreator"
    # the revoked one does not
    refused = handshake(server, client_ssl_context(directory, "clients/watcher/watcher"))
    assert refused.client_error is not None
    assert refused.client_cn is None
    assert refused.server_error is not None and "revoked" in str(refused.server_error).lower()


@pytest.mark.parametrize("profile", [[], ["+pz"]], ids=["default-profile", "bcp195-ex-tls12"])
def test_dcmtk_echo_with_issued_certificates(pki_dir: Path, profile: list[str]) -> None:
    """DCMTK storescp (the issued server certificate) and echoscu (the issued client
    certificate) accept the issued PKI."""
    echoscu = require_tool("echoscu")
    with storescp_peer(pki_dir, *profile) as port:
        proc = subprocess.run(
            [
                echoscu,
                "-d",
                "+tls",
                str(pki_dir / f"{PKI_CLIENT}.key"),
                str(pki_dir / f"{PKI_CLIENT}.pem"),
                "+cf",
                str(pki_dir / PKI_CA),
                *profile,
                "127.0.0.1",
                str(port),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    log = proc.stdout + proc.stderr
    assert "Received Echo Response (Success)" in log
    # with EC keys DCMTK's default profile has no TLS 1.2 suite; +pz gives ECDHE-ECDSA 1.2
    assert ("Protocol    : TLSv1.2" if profile else "Protocol    : TLSv1.3") in log
