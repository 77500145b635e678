"""The audit trail (IHE ATNA): DICOM PS3.15 A.5 audit messages, RFC 5424 framing, the spool,
and `tdwii serve --audit` end to end against a real Audit Record Repository: rsyslog over
mutual TLS (RFC 5425) and UDP (RFC 5426), started by a fixture on loopback
(tests/auditrepo.py), with a file destination beside it.

Every message is validated against the DICOM audit message schema: PS3.15 A.5.1.1 gives it
in RELAX NG compact form (tests/data/dicom-audit-message.rnc, copied from the standard);
`trang` converts it to RELAX NG XML and lxml validates with it.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from auditrepo import BOM, Repository, parse
from bindings import client, write_bindings
from conftest import (
    TdwiiServer,
    free_port,
    mtls_args,
    openssl_client,
    require_tool,
    run_echo_cli,
    start_tdwii_server,
    unfit_leaf,
    wait_until,
)
from tdwii_cli.access import aefile
from tdwii_cli.audit import events, syslog
from tdwii_cli.audit import messages as m
from tdwii_cli.audit.destinations import FileSink
from tdwii_cli.audit.destinations import parse as parse_destination
from tdwii_cli.audit.spool import RESERVE, Spool, SpoolError
from tdwii_cli.errors import TdwiiError
from upsops import UPS_QUERY, action, claim, create, final_attributes, n_set, subscribe, tdd

lxml = pytest.importorskip("lxml.etree")  # the test extra installs it

DATA = Path(__file__).parent / "data"
NOT_AUTHORIZED = 0x0124


@pytest.fixture(scope="session")
def schema(tmp_path_factory: pytest.TempPathFactory) -> object:
    """The DICOM audit message schema (PS3.15 A.5.1.1) as an lxml RelaxNG validator."""
    trang = require_tool("trang", "trang")
    work = tmp_path_factory.mktemp("schema")
    compact = work / "audit-message.rnc"
    # trang takes "##" annotations only before a definition; the standard also puts them
    # after values (`"C" | ## Create`): as plain comments they mean the same
    compact.write_text((DATA / "dicom-audit-message.rnc").read_text().replace("##", "#"))
    subprocess.run(
        [trang, "-I", "rnc", "-O", "rng", str(compact), str(work / "audit.rng")], check=True
    )
    return lxml.RelaxNG(lxml.parse(str(work / "audit.rng")))


def valid(schema: object, xml: bytes) -> object:
    """The parsed message, asserting it is one line, well-formed and valid against the schema."""
    assert b"\n" not in xml and b"\r" not in xml
    doc = lxml.fromstring(xml)
    assert schema.validate(doc), (schema.error_log, xml[:2000])  # type: ignore[attr-defined]
    return doc


# -- the messages, as data ---------------------------------------------------------------

NODE = events.Node("UPSSCP", "worklist.example.org", 4242)
HOSTILE = 'TDD\x1b[31m<&>"\n\x00\u202e\U0001f600\\'
PEER = events.Peer("127.0.0.2", "TDD1", f"CN={HOSTILE},O=tdwii", HOSTILE)


def every_kind() -> list[m.AuditMessage]:
    patient = events.Patient("PAT-1", "Doe^Jane")
    return [
        events.application(NODE, started=True),
        events.application(NODE, started=False),
        events.security_alert(NODE, m.NODE_AUTHENTICATION, f"refused: {HOSTILE}", peer=PEER),
        events.security_alert(
            NODE, m.SECURITY_ROLES_CHANGED, "reloaded", subject_uri="file:///etc/ae.json"
        ),
        events.security_alert(NODE, m.AUDIT_RECORDING_STOPPED, "full", outcome=m.SERIOUS_FAILURE),
        events.query(
            NODE, PEER, UPS_QUERY, b"\x10\x00\x20\x00LO\x04\x00PAT*", "1.2.840.10008.1.2.1"
        ),
        events.query(
            NODE,
            PEER,
            "1.2.840.10008.5.1.4.34.6.2",
            b"",
            "1.2.840.10008.1.2",
            types=(events.SUBSCRIBE,),
            for_ae="WATCHER",
            outcome=m.MINOR_FAILURE,
            outcome_text=HOSTILE,
        ),
        events.query(NODE, PEER, UPS_QUERY, b"x" * (events.QUERY_LIMIT + 1), "1.2.840.10008.1.2.1"),
        events.procedure_record(
            NODE,
            PEER,
            "C",
            "1.2.3.4",
            events.Patient(HOSTILE, HOSTILE),
            study_uid="1.2.3.5",
            types=(events.N_CREATE,),
            details=(("ProcedureStepState", "SCHEDULED"),),
        ),
        events.procedure_record(NODE, PEER, "U", "1.2.3.4", patient, types=(events.RO_65,)),
        events.procedure_record(NODE, PEER, "R", "1.2.3.4", events.Patient("")),
    ]


def test_every_kind_of_message_is_valid_dicom_audit_xml_whatever_the_peer_sent(
    schema: object,
) -> None:
    for message in every_kind():
        doc = valid(schema, message.xml().encode("utf-8"))
        text = message.xml()
        assert "\x1b" not in text and "\x00" not in text and "\u202e" not in text
        assert doc.find("AuditSourceIdentification").get("AuditSourceID") == "worklist.example.org"
    alert = lxml.fromstring(every_kind()[2].xml().encode())
    peer = alert.findall("ActiveParticipant")[1]
    assert peer.get("AlternativeUserID") == "AETITLES=TDD1"
    assert peer.get("NetworkAccessPointID") == "127.0.0.2"
    assert peer.get("UserName").startswith("CN=TDD\\x1b[31m<&>")  # escaped, not raw
    omitted = lxml.fromstring(every_kind()[7].xml().encode())
    details = [d.get("type") for d in omitted.iter("ParticipantObjectDetail")]
    assert details == ["TransferSyntax", "QueryOmitted"]


def test_syslog_framing_follows_rfc_5424_and_5425() -> None:
    when = dt.datetime(2031, 5, 14, 9, 0, 0, 123456, tzinfo=dt.timezone.utc)
    body = syslog.message("<AuditMessage/>", when=when, hostname="host name", procid="42")
    assert body == (
        b"<85>1 2031-05-14T09:00:00.123456Z host_name tdwii 42 DICOM+RFC3881 - "
        + BOM
        + b"<AuditMessage/>"
    )
    alert = syslog.message("<x/>", when=when, hostname="h", procid="1", severity=syslog.WARNING)
    assert alert.startswith(b"<84>1 ")
    assert syslog.octet_counted(b"abc") == b"3 abc"
    assert parse(body).msgid == "DICOM+RFC3881"


@pytest.mark.parametrize(
    ("text", "kind", "where"),
    [
        ("syslog+tls://arr.example.org", "tls", ("arr.example.org", 6514)),
        ("syslog+tls://[::1]:7514", "tls", ("::1", 7514)),
        ("udp://127.0.0.1", "udp", ("127.0.0.1", 514)),
        ("/var/log/tdwii/audit.log", "file", ("", 0)),
    ],
)
def test_destinations_are_read_as_given(text: str, kind: str, where: tuple[str, int]) -> None:
    destination = parse_destination(text)
    assert destination.kind == kind and (destination.host, destination.port) == where


@pytest.mark.parametrize("text", ["tcp://x:1", "syslog+tls://:6514", "udp://h:99999", ""])
def test_a_bad_destination_is_one_line(text: str) -> None:
    with pytest.raises(TdwiiError):
        parse_destination(text)


# -- the spool and the file destination ----------------------------------------------------


def test_the_spool_is_private_bounded_and_kept_across_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "audit.spool"
    spool = Spool(path, ["a", "b"], limit=3)
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    assert all(spool.add(f"m{i}".encode()) for i in range(3))
    assert not spool.add(b"m3")  # full
    assert spool.add(b"alert", reserve=True)  # its own alarm still fits
    assert [body for _, body in spool.batch("a")] == [b"m0", b"m1", b"m2", b"alert"]
    assert [body for _, body in spool.batch("a", 2)] == [b"m0", b"m1"]  # until it is sent
    spool.sent("a", spool.batch("a")[1][0])
    assert spool.count == 4  # b has taken none: all are kept
    for child in path.iterdir():
        assert stat.S_IMODE(child.stat().st_mode) == 0o600, child
    with pytest.raises(SpoolError, match="in use by another tdwii serve"):
        Spool(path, ["a"], limit=3)
    spool.close()
    again = Spool(path, ["a", "b"], limit=3)
    assert [body for _, body in again.batch("a")] == [b"m2", b"alert"]
    assert [body for _, body in again.batch("b")] == [b"m0", b"m1", b"m2", b"alert"]
    again.sent("b", again.batch("b")[-1][0])
    assert again.count == 2  # what the slowest has taken no longer counts
    again.close()
    # a destination new to the spool gets what is still waiting
    third = Spool(path, ["a", "b", "c"], limit=3)
    assert [body for _, body in third.batch("c")][-2:] == [b"m2", b"alert"]
    assert RESERVE > 1
    third.close()


def test_spool_segments_roll_are_dropped_once_taken_and_a_cut_record_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tdwii_cli.audit import spool as spool_module

    monkeypatch.setattr(spool_module, "SEGMENT_BYTES", 200)
    path = tmp_path / "spool"
    spool = Spool(path, ["a"], limit=1000)
    bodies = [f"message {i:03d} ".encode() * 4 for i in range(30)]
    spool.add_many([(body, False) for body in bodies])
    spool.add_many([(body, False) for body in bodies])
    segments = sorted(path.glob("*.seg"))
    assert len(segments) >= 2
    got = []
    while batch := spool.batch("a", 7):
        got += [body for _, body in batch]
        spool.sent("a", batch[-1][0])
    assert got == bodies + bodies
    assert len(list(path.glob("*.seg"))) <= 2  # the taken ones are gone
    spool.add(b"after")
    spool.close()
    # a power cut left the last record half written: found by its length and CRC, cut off
    last = sorted(path.glob("*.seg"))[-1]
    with last.open("ab") as fh:
        fh.write(b"\x99" * 11)
    again = Spool(path, ["a"], limit=1000)
    assert [body for _, body in again.batch("a")] == [b"after"]
    assert again.add(b"next")
    assert [body for _, body in again.batch("a")] == [b"after", b"next"]
    again.close()


def test_a_path_that_is_not_a_spool_is_refused_and_left_alone(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE patients (id TEXT)")
    before = other.read_bytes()
    with pytest.raises(SpoolError, match="is not a folder"):
        Spool(other, ["a"], limit=10)
    assert other.read_bytes() == before
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "holiday.jpg").write_bytes(b"jpeg")
    with pytest.raises(SpoolError, match="holds files that are not a spool's"):
        Spool(folder, ["a"], limit=10)
    assert sorted(p.name for p in folder.iterdir()) == ["holiday.jpg"]  # untouched


def test_a_file_destination_recognises_lines_written_before_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    sink = FileSink(path)
    size = sink.send([b"one", b"two"])
    assert path.read_bytes() == b"one\ntwo\n" and size == 8
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # killed after writing three more lines (the last one cut short) and before counting them
    with path.open("ab") as fh:
        fh.write(b"three\nfour\nfi")
    lines, size = FileSink(path).resume(8)
    assert (lines, size) == (2, 19)
    assert path.read_bytes() == b"one\ntwo\nthree\nfour\n"
    assert FileSink(path).resume(None) == (0, 19)  # a file we never wrote to: nothing ours


# -- end to end: tdwii serve, rsyslog, a file ----------------------------------------------


@dataclass
class Env:
    workdir: Path
    repo: Repository
    server: TdwiiServer
    args: tuple[str, ...]

    @property
    def audit_file(self) -> Path:
        return self.workdir / "audit.log"

    def file_lines(self) -> list[bytes]:
        try:
            return [line for line in self.audit_file.read_bytes().split(b"\n") if line]
        except FileNotFoundError:
            return []

    def restart(self) -> None:
        self.server = start_tdwii_server(self.workdir, *self.args, log_name="audit-again")

    def in_step(self, *needles: str, timeout: float = 60.0) -> list[bytes]:
        """The repository's messages once the file has messages naming each of `needles` and
        the repository has every message the file has (and no other)."""

        def same() -> list[bytes]:
            mine, theirs = self.file_lines(), self.repo.messages()
            text = b"\n".join(mine)
            if not all(needle.encode() in text for needle in needles):
                return []
            return theirs if mine and theirs == mine else []

        def differ() -> str:
            mine, theirs = self.file_lines(), self.repo.messages()
            return f"the repository to have the file's {len(mine)} messages, it has {len(theirs)}"

        return wait_until(same, timeout, differ, 0.05)


@pytest.fixture(scope="module")
def env(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("audit")
    shutil.copytree(pki_dir, workdir / "certs")
    write_bindings(workdir / "certs", workdir / "ae.json", free_port())
    repo = Repository(workdir / "repository", workdir / "certs")
    repo.start()
    args = (
        "--ae-config", "ae.json", "--authorize",
        "--audit", repo.tls_url, "--audit", "audit.log", "--audit", repo.udp_url,
    )  # fmt: skip
    server = start_tdwii_server(workdir, *args, log_name="audit")
    current = Env(workdir, repo, server, args)
    try:
        yield current
    finally:
        current.server.stop()
        repo.stop()


def docs(schema: object, lines: list[bytes]) -> list[object]:
    out = []
    for line in lines:
        framed = parse(line)
        assert framed.pri in (84, 85) and framed.version == "1" and framed.app == "tdwii"
        out.append(valid(schema, framed.xml))
    return out


def event_of(doc: object) -> tuple[str, tuple[str, ...]]:
    ident = doc.find("EventIdentification")  # type: ignore[attr-defined]
    types = tuple(t.get("csd-code") for t in ident.findall("EventTypeCode"))
    return ident.find("EventID").get("csd-code"), types


def test_operations_reach_the_repository_as_valid_audit_messages(
    env: Env, schema: object, other_ca_pki: Path
) -> None:
    txn = generate_uid()
    certs = env.workdir / "certs"
    with tdd(env.server, "TMS") as tms:
        uid = create(tms, patient_id="PAT-AUDIT", patient_name="Audit^Patient")
        assert claim(tms, uid, generate_uid()) == NOT_AUTHORIZED  # by role: refused
        query = Dataset()
        query.PatientID = "PAT-AUDIT"
        query.TransactionUID = ""  # asked for, never returned, never audited
        assert [s.Status for s, _ in tms.send_c_find(query, UPS_QUERY)][-1] == 0
    with tdd(env.server, "TDD1", client("tdd1")) as device:
        assert subscribe(device, "TDD1") == 0
        assert claim(device, uid, txn) == 0
        progress = Dataset()
        progress.ProcedureStepProgress = 50
        step = {"TransactionUID": txn, "ProcedureStepProgressInformationSequence": [progress]}
        assert n_set(device, uid, **step) == 0
        assert n_set(device, uid, **final_attributes(txn)) == 0
        assert action(device, uid, 1, ProcedureStepState="COMPLETED", TransactionUID=txn) == 0
    # refusals before any operation: an AE title not bound, a certificate of another CA
    echo = run_echo_cli(*mtls_args(certs), "-aet", "TDD1", "127.0.0.1", str(env.server.port))
    assert echo.returncode == 61
    foreign = mtls_args(other_ca_pki)
    foreign[foreign.index("-ca") + 1] = str(certs / "rootCA/rootCA.pem")
    assert run_echo_cli(*foreign, "127.0.0.1", str(env.server.port)).returncode == 63

    def refused_handshake_audited() -> bool:
        return any(b"connection refused: TLS handshake failed" in line for line in env.file_lines())

    wait_until(refused_handshake_audited, 30, "the refused handshake in the audit file")
    lines = env.in_step(uid)
    parsed = docs(schema, lines)
    kinds = [event_of(d) for d in parsed]
    assert kinds[0] == ("110100", ("110120",))  # Application Start
    for expected in [
        ("110111", ("N-CREATE",)),
        ("110113", ("110132",)),  # the claim refused by role
        ("110112", ()),  # the C-FIND
        ("110112", ("SUBSCRIBE",)),
        ("110111", ("CHANGE-STATE", "RO-60")),
        ("110111", ("N-SET", "RO-62")),
        ("110111", ("N-SET", "RO-64")),
        ("110111", ("CHANGE-STATE", "RO-65")),
        ("110113", ("110126",)),  # association rejected, and the refused handshake
    ]:
        assert expected in kinds, (expected, kinds)
    everything = b"\n".join(lines)
    assert txn.encode() not in everything
    assert b"PRIVATE KEY" not in everything and b"secret" not in everything
    # every message about a peer names it: address, AE title, certificate subject
    for doc in parsed:
        peers = [
            p
            for p in doc.findall("ActiveParticipant")
            if p.get("NetworkAccessPointTypeCode") == "2"
        ]
        for participant in peers:
            assert participant.get("NetworkAccessPointID") == "127.0.0.1"
        if event_of(doc)[0] in ("110111", "110112"):
            (peer,) = peers
            assert peer.get("AlternativeUserID") in ("AETITLES=TMS", "AETITLES=TDD1")
            assert peer.get("UserName").startswith("CN=")
    record = next(d for d in parsed if event_of(d) == ("110111", ("CHANGE-STATE", "RO-65")))
    patient = next(
        o
        for o in record.findall("ParticipantObjectIdentification")
        if o.get("ParticipantObjectTypeCodeRole") == "1"
    )
    assert patient.get("ParticipantObjectID") == "PAT-AUDIT"
    assert patient.findtext("ParticipantObjectName") == "Audit^Patient"
    assert uid in [i.get("UID") for i in record.iter("Instance")]
    # the UDP input got them too (best effort, RFC 5426: on loopback none is lost)
    over_udp = wait_until(lambda: env.repo.messages(udp=True), 30, "messages over UDP")
    assert set(over_udp) <= set(lines) and lines[0] in over_udp


def test_reloads_and_unfit_certificates_are_security_alerts(env: Env, schema: object) -> None:
    start = len(env.file_lines())
    env.server.proc.send_signal(signal.SIGHUP)  # TLS set-up and AE configuration reread
    aefile.update_entry(env.workdir / "ae.json", "NEWDEV", "CN=newdev", frozenset({"query"}))
    pem = unfit_leaf(env.workdir / "certs", env.workdir, "keyagree")
    openssl_client(
        env.server.port,
        *("-cert", str(pem), "-key", str(pem.with_suffix(".key")), "-tls1_3"),
        *("-CAfile", str(env.workdir / "certs/rootCA/rootCA.pem")),
    )

    def alerts() -> list[tuple[str, tuple[str, ...]]]:
        found = [event_of(valid(schema, parse(line).xml)) for line in env.file_lines()[start:]]
        wanted = {("110113", ("110129",)), ("110113", ("110136",)), ("110113", ("110126",))}
        return found if wanted <= set(found) else []

    wait_until(alerts, 30, "the reload and refusal alerts in the audit file")
    text = b"\n".join(env.file_lines()[start:])
    assert b"KeyUsage lacks digitalSignature" in text
    assert b"AE configuration reloaded" in text and b"TLS set-up (SIGHUP) reloaded" in text


def test_the_audit_files_are_private(env: Env) -> None:
    spool = env.workdir / "tdwii.sqlite.audit"
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    for path in (env.audit_file, *spool.iterdir()):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_repository_that_stops_gets_every_message_once_in_order_when_back(env: Env) -> None:
    env.in_step()
    env.repo.stop()
    start = len(env.server.log_text())
    with tdd(env.server, "TMS") as tms:
        made = [create(tms, patient_id=f"PAT-DOWN-{i}") for i in range(5)]

    def in_file() -> bool:
        text = b"\n".join(env.file_lines())
        return all(uid.encode() in text for uid in made)

    wait_until(in_file, 30, "the workitems made while the repository is down in the file")
    env.server.wait_log("is not taking messages", start)
    env.repo.start()
    with tdd(env.server, "TMS") as tms:
        made.append(create(tms, patient_id="PAT-BACK"))
    theirs = env.in_step(*made)
    assert len(theirs) == len(set(theirs))  # none twice
    text = b"\n".join(theirs)
    assert all(uid.encode() in text for uid in made)
    env.server.wait_log("is taking messages again", start)


def test_kill_9_with_a_full_spool_then_a_restart_loses_nothing(env: Env) -> None:
    env.in_step()
    env.repo.stop()
    with tdd(env.server, "TMS") as tms:
        made = [create(tms, patient_id=f"PAT-KILL-{i}") for i in range(5)]

    def spooled() -> bool:
        text = b"\n".join(env.file_lines())
        return all(uid.encode() in text for uid in made)

    wait_until(spooled, 30, "the workitems in the audit file")
    env.server.proc.send_signal(signal.SIGKILL)
    env.server.proc.wait(10)
    env.repo.start()
    env.restart()
    with tdd(env.server, "TMS") as tms:
        made.append(create(tms, patient_id="PAT-AFTER-KILL"))
    theirs = env.in_step(*made)
    assert len(theirs) == len(set(theirs))
    text = b"\n".join(theirs)
    assert all(uid.encode() in text for uid in made)
    assert text.count(b'originalText="Application Start"') == 2  # one per start


def test_a_full_spool_drops_with_an_alert_and_says_how_many_when_it_has_room(
    pki_dir: Path, tmp_path: Path, schema: object
) -> None:
    shutil.copytree(pki_dir, tmp_path / "certs")
    repo = Repository(tmp_path / "repository", tmp_path / "certs")  # not started yet
    server = start_tdwii_server(
        tmp_path,
        "--audit", repo.tls_url, "--audit", "audit.log", "--audit-spool-limit", "12",
        log_name="full",
    )  # fmt: skip
    try:
        with tdd(server, "TMS") as tms:
            for i in range(20):
                create(tms, patient_id=f"PAT-FULL-{i}")
        line = server.wait_log("audit spool", 0)
        assert "is full (12 messages waiting" in line and "ERROR" in line
        assert line.count("is full") == 1

        def stopped_in_file() -> bool:  # Audit Recording Stopped
            return b'csd-code="110133"' in (tmp_path / "audit.log").read_bytes()

        wait_until(stopped_in_file, 30, "Audit Recording Stopped in the audit file")
        repo.start()

        def restarted() -> list[bytes]:
            got = repo.messages()
            return got if any(b'csd-code="110134"' in entry for entry in got) else []

        got = wait_until(restarted, 90, "Audit Recording Started at the repository")
        started = next(entry for entry in got if b'csd-code="110134"' in entry)
        assert re.search(rb"\d+ audit message\(s\) were dropped", started)
        for entry in got:
            valid(schema, parse(entry).xml)
    finally:
        server.stop()
        repo.stop()


def test_a_repository_that_does_not_know_our_ca_is_one_warning_and_no_stall(
    pki_dir: Path, other_ca_pki: Path, tmp_path: Path
) -> None:
    shutil.copytree(pki_dir, tmp_path / "certs")
    shutil.copytree(other_ca_pki, tmp_path / "other")
    repo = Repository(tmp_path / "repository", tmp_path / "other")  # trusts another CA only
    with repo:
        server = start_tdwii_server(tmp_path, "--audit", repo.tls_url, log_name="foreign")
        try:
            with tdd(server, "TMS") as tms:
                create(tms, patient_id="PAT-FOREIGN")
            line = server.wait_log("is not taking messages")
            assert "TLS handshake" in line and "untrusted" in line.lower()
            assert repo.messages() == []
        finally:
            server.stop()


def test_a_bad_audit_set_up_is_one_line_before_anything_is_served(
    pki_dir: Path, tmp_path: Path
) -> None:
    shutil.copytree(pki_dir, tmp_path / "certs")
    for args, words in (
        (["--audit", "tcp://x"], "unknown scheme"),
        (["--audit", "a.log", "--audit", "a.log"], "given twice"),
        (
            ["--audit", "syslog+tls://127.0.0.1", "--audit-cert", "no.pem"],
            "audit cert no.pem not found",
        ),
        (["--audit", "x.log", "--audit-spool", "certs"], "holds files that are not a spool"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "tdwii_cli", "serve", "--mtls", "--port", "0", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 1, run.stderr
        errors = [line for line in run.stderr.splitlines() if line.startswith("tdwii: error:")]
        assert len(errors) == 1 and words in errors[0], run.stderr
        assert "Traceback" not in run.stderr


def test_a_dead_repository_never_slows_an_answer(pki_dir: Path, tmp_path: Path) -> None:
    """A repository that takes the TCP connection and never answers the TLS handshake: the
    sender waits on it, the DICOM answers do not."""
    import socket
    import time

    shutil.copytree(pki_dir, tmp_path / "certs")
    with socket.socket() as hole:  # listens, never accepts: connects, then silence
        hole.bind(("127.0.0.1", 0))
        hole.listen(8)
        url = f"syslog+tls://127.0.0.1:{hole.getsockname()[1]}"
        server = start_tdwii_server(tmp_path, "--audit", url, "--audit", "a.log", log_name="hole")
        try:
            with tdd(server, "TMS") as tms:
                create(tms, patient_id="PAT-HOLE-0")  # the sender is stuck from here on
                began = time.monotonic()
                for i in range(1, 31):
                    create(tms, patient_id=f"PAT-HOLE-{i}")
                took = time.monotonic() - began
            assert took < 5.0, f"30 N-CREATEs took {took:.1f} s with a dead repository"

            def in_file() -> bool:
                return b"PAT-HOLE-30" in (tmp_path / "a.log").read_bytes()

            wait_until(in_file, 30, "the other destination to go on")
        finally:
            assert server.stop() == 0


def test_the_ini_file_turns_on_authorization_and_audit(pki_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(pki_dir, tmp_path / "certs")
    write_bindings(tmp_path / "certs", tmp_path / "ae.json", free_port())
    (tmp_path / "upsscp.ini").write_text(
        "[DEFAULT]\nmutual_tls: true\nae_config: ae.json\nauthorize: true\n"
        "audit: one.log, two.log\naudit_spool_limit: 50\n"
    )
    server = start_tdwii_server(tmp_path, "-c", "upsscp.ini", tls=False, log_name="ini")
    try:
        with tdd(server, "TMS") as tms:
            uid = create(tms, patient_id="PAT-INI")
            assert claim(tms, uid, generate_uid()) == NOT_AUTHORIZED

        def both() -> bool:
            return all(
                (tmp_path / name).exists() and uid.encode() in (tmp_path / name).read_bytes()
                for name in ("one.log", "two.log")
            )

        wait_until(both, 30, "the workitem in both audit files")
    finally:
        assert server.stop() == 0
