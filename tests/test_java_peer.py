"""A Java JSSE client (built in the test from `tests/peers_java/`, run by the JDK CI
installs) associates with `tdwii serve --mtls` using the PKCS#12 stores `tdwii pki init`
writes, sends a C-ECHO and releases: what dcm4che's tools do underneath."""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import PKI_CLIENT, TdwiiServer, require_tool
from tdwii_cli.dicom.uids import IMPLICIT_VR_LE, VERIFICATION
from tdwii_cli.net import dimse, pdu

SOURCE = Path(__file__).parent / "peers_java" / "DicomTlsClient.java"


def test_java_jsse_client_echoes_over_mtls(tdwii_server: TdwiiServer, tmp_path: Path) -> None:
    java = require_tool("java")
    certs = tdwii_server.workdir / "certs"
    contexts = [pdu.PresentationContext(1, VERIFICATION, (IMPLICIT_VR_LE,))]
    echo = dimse.Command(dimse.C_ECHO_RQ, message_id=1, sop_class=VERIFICATION)
    files = []
    for name, data in [
        ("rq", pdu.associate_rq("JAVA", "UPSSCP", contexts)),
        ("echo", dimse.encode_message(1, echo, None, 16384)),
        ("release", pdu.RELEASE_RQ),
    ]:
        (tmp_path / name).write_bytes(data)
        files.append(str(tmp_path / name))
    stores = [str(certs / f"{PKI_CLIENT}.p12"), str(certs / "rootCA/rootCA.p12"), "secret"]
    proc = subprocess.run(
        [java, str(SOURCE), tdwii_server.host, str(tdwii_server.port), *stores, *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("TLS TLSv1.3 ")
    kinds = [line.split()[1] for line in lines[1:]]
    assert kinds == ["02", "04", "06"]  # A-ASSOCIATE-AC, P-DATA-TF, A-RELEASE-RP
    payload = bytes.fromhex(lines[2].split()[3])
    message = dimse.MessageAssembler().feed(payload)[0]
    assert message.command.field == dimse.C_ECHO_RSP and message.command.status == 0
    assert "association accepted, JAVA -> UPSSCP" in tdwii_server.log_text()
