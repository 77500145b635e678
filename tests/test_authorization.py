"""Authorization over the wire: a real `tdwii serve --mtls --authorize` with certificates bound
to AE titles and roles in its AE configuration, attacked as the one certificate issued to
`workitemcreator` would attack it, and each role used once where it may and once where it
may not. pynetdicom is the delivery device (tests/upsops.py), `tdwii echo` and DCMTK's
echoscu the callers whose association is rejected; the store is read with sqlite3 to show
that a refusal changed nothing. The bindings and roles are those of tests/bindings.py.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from bindings import client, write_bindings
from conftest import (
    PKI_CA,
    PKI_CLIENT,
    TdwiiServer,
    free_port,
    mtls_args,
    one_error_line,
    require_tool,
    run_echo_cli,
    start_tdwii_server,
    wait_until,
    write_leaf,
)
from tdwii_cli.access import aefile
from upsops import (
    GLOBAL,
    UPS_PUSH,
    UPS_QUERY,
    UPS_WATCH,
    action,
    claim,
    create,
    final_attributes,
    n_set,
    state_of,
    subscribe,
    tdd,
    unsubscribe,
)

NOT_AUTHORIZED, FIND_NOT_AUTHORIZED = 0x0124, 0xC124


@dataclass
class Env:
    workdir: Path
    server: TdwiiServer

    def snapshot(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Every workitem (state, patient, performer, Transaction UID, data set) and every
        subscription, as the store holds them."""
        with sqlite3.connect(self.server.db) as db:
            items = db.execute(
                "SELECT uid, state, patient_id, patient_name, performer_ae, transaction_uid, "
                "dataset FROM workitems ORDER BY uid"
            ).fetchall()
            subs = db.execute(
                "SELECT ae_title, target, deletion_lock, suspended FROM subscriptions "
                "ORDER BY ae_title, target"
            ).fetchall()
        return items, subs


@pytest.fixture(scope="module")
def env(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    workdir = tmp_path_factory.mktemp("authz")
    shutil.copytree(pki_dir, workdir / "certs")
    write_bindings(workdir / "certs", workdir / "ae.json", free_port())
    server = start_tdwii_server(workdir, "--ae-config", "ae.json", "--authorize", log_name="authz")
    try:
        yield Env(workdir, server)
    finally:
        server.stop()


def fingerprint(pem: Path) -> str:
    return x509.load_pem_x509_certificate(pem.read_bytes()).fingerprint(hashes.SHA256()).hex()


def echo(env: Env, ae_title: str, node: str = PKI_CLIENT) -> subprocess.CompletedProcess[str]:
    certs = env.workdir / "certs"
    return run_echo_cli(
        *mtls_args(certs, node), "-aet", ae_title, env.server.host, str(env.server.port)
    )


def test_serve_v_shows_the_bindings_it_enforces(env: Env) -> None:
    text = env.server.log_text()
    assert "AE titles, certificates and roles: enforced (--authorize)" in text
    assert "CN=tdd1b" in text and "perform, watch, query" in text


def test_a_calling_ae_title_not_bound_to_the_certificate_is_rejected(env: Env) -> None:
    start = len(env.server.log_text())
    refused = echo(env, "TDD1")  # the creator's certificate calling as a delivery device
    assert refused.returncode == 61, refused.stderr
    assert "rejected (permanent): calling AE title not recognised" in one_error_line(refused)
    line = env.server.wait_log("association rejected", start)
    certs = env.workdir / "certs"
    for needle in (
        "calling AE title TDD1 is not bound to its certificate",
        "127.0.0.1:",
        "CN=workitemcreator,O=tdwii",
        fingerprint(certs / f"{PKI_CLIENT}.pem"),
    ):
        assert needle in line, line
    assert echo(env, "TMS").returncode == 0  # bound: the same certificate as TMS is welcome
    # a foreign toolkit sees the same standard rejection
    echoscu = require_tool("echoscu")
    dcmtk = subprocess.run(
        [
            echoscu,
            "+tls",
            str(certs / f"{PKI_CLIENT}.key"),
            str(certs / f"{PKI_CLIENT}.pem"),
            "+cf",
            str(certs / PKI_CA),
            "-aet",
            "TDD1",
            env.server.host,
            str(env.server.port),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert dcmtk.returncode != 0
    assert "Calling AE Title Not Recognized" in dcmtk.stdout + dcmtk.stderr


def test_the_creators_certificate_cannot_claim_cancel_or_subscribe(env: Env) -> None:
    txn = generate_uid()
    with tdd(env.server, "TMS") as tms:
        held, scheduled = create(tms, patient_id="PAT-ATK"), create(tms, patient_id="PAT-ATK")
    with tdd(env.server, "TDD1", client("tdd1")) as device:
        assert claim(device, held, txn) == 0x0000
        assert subscribe(device, "TDD1") == 0x0000  # its own global subscription
    before = env.snapshot()
    with tdd(env.server, "TMS") as tms:
        assert claim(tms, scheduled, generate_uid()) == NOT_AUTHORIZED
        # completing, even with the holder's Transaction UID
        assert n_set(tms, held, **final_attributes(txn)) == NOT_AUTHORIZED
        done = {"ProcedureStepState": "COMPLETED", "TransactionUID": txn}
        assert action(tms, held, 1, **done) == NOT_AUTHORIZED
        # cancelling: requested of the holder, and a SCHEDULED one outright
        assert action(tms, held, 2, UPS_PUSH) == NOT_AUTHORIZED
        assert action(tms, scheduled, 2, UPS_PUSH) == NOT_AUTHORIZED
        # others' subscriptions
        assert subscribe(tms, "TDD1", DeletionLock="TRUE") == NOT_AUTHORIZED
        assert subscribe(tms, "WATCHER", DeletionLock="TRUE") == NOT_AUTHORIZED
        assert action(tms, GLOBAL, 5, UPS_WATCH, ReceivingAE="TDD1") == NOT_AUTHORIZED
        assert unsubscribe(tms, "TDD1") == NOT_AUTHORIZED
    assert env.snapshot() == before
    assert "needs role perform (TMS has create, query)" in env.server.log_text()


def test_a_device_may_not_rename_the_patient_nor_create(env: Env) -> None:
    with tdd(env.server, "TMS") as tms:
        uid = create(tms, patient_id="PAT-NAME", patient_name="Right^Patient")
    before = env.snapshot()
    with tdd(env.server, "TDD1", client("tdd1")) as device:
        wrong = {"PatientName": "Wrong^Patient", "PatientID": "WRONG-ID"}
        assert n_set(device, uid, **wrong) == NOT_AUTHORIZED
        ds = Dataset()
        ds.PatientName = "Wrong^Patient"
        status, _ = device.send_n_create(ds, UPS_PUSH, generate_uid())
        assert status.Status == NOT_AUTHORIZED
        assert "needs role create" in status.ErrorComment
    assert env.snapshot() == before
    with tdd(env.server, "TMS") as tms:  # the creator may, while it is SCHEDULED
        assert n_set(tms, uid, PatientName="Renamed^Patient") == 0x0000


def test_reading_the_worklist_needs_the_query_role(env: Env) -> None:
    with tdd(env.server, "TMS") as tms:
        uid = create(tms, patient_id="PAT-READ", patient_name="Secret^Name")
    with tdd(env.server, "TDD2", client("tdd2")) as device:
        query = Dataset()
        query.PatientID = ""
        query.PatientName = ""
        responses = list(device.send_c_find(query, UPS_QUERY))
        assert [s.Status for s, _ in responses] == [FIND_NOT_AUTHORIZED]
        assert all(identifier is None for _, identifier in responses)
        status, got = device.send_n_get([0x00100010], UPS_PUSH, uid)
        assert status.Status == NOT_AUTHORIZED and got is None
    with tdd(env.server, "READER", client("reader")) as reader:
        assert state_of(reader, uid) == (0x0000, "SCHEDULED")


def test_each_role_is_allowed_once_and_refused_once(env: Env) -> None:
    with tdd(env.server, "TMS") as tms:  # create: allowed
        work, spare = create(tms, patient_id="PAT-ROLES"), create(tms, patient_id="PAT-ROLES")
    txn = generate_uid()
    with tdd(env.server, "TDD1", client("tdd1")) as device:
        attempt = Dataset()
        attempt.PatientID = "PAT-ROLES"
        created, _ = device.send_n_create(attempt, UPS_PUSH, generate_uid())
        assert created.Status == NOT_AUTHORIZED  # create: refused
        assert claim(device, work, txn) == 0x0000  # perform: allowed
        progress = Dataset()
        progress.ProcedureStepProgress = 50
        status = n_set(
            device,
            work,
            TransactionUID=txn,
            ProcedureStepProgressInformationSequence=[progress],
        )
        assert status == 0x0000
        assert n_set(device, work, **final_attributes(txn)) == 0x0000
        done = {"ProcedureStepState": "COMPLETED", "TransactionUID": txn}
        assert action(device, work, 1, **done) == 0x0000
        assert action(device, spare, 2, UPS_PUSH) == NOT_AUTHORIZED  # cancel: refused
        assert subscribe(device, "TDD1", spare) == 0x0000  # watch: allowed, for itself
        assert unsubscribe(device, "TDD1", spare) == 0x0000
        assert subscribe(device, "WATCHER") == NOT_AUTHORIZED  # admin: refused
    with tdd(env.server, "TMS") as tms:
        assert claim(tms, spare, generate_uid()) == NOT_AUTHORIZED  # perform: refused
        assert subscribe(tms, "TMS") == NOT_AUTHORIZED  # watch: refused (no role)
    with tdd(env.server, "CANCELLER", client("canceller")) as canceller:
        assert action(canceller, spare, 2, UPS_PUSH) == 0x0000  # cancel: allowed
    with tdd(env.server, "ADMIN", client("admin")) as admin:  # admin: allowed, for another
        assert subscribe(admin, "WATCHER", DeletionLock="FALSE") == 0x0000
        assert action(admin, GLOBAL, 5, UPS_WATCH, ReceivingAE="WATCHER") == 0x0000
        assert unsubscribe(admin, "WATCHER") == 0x0000
        assert state_of(admin, spare) == (0x0000, "CANCELED")  # query: allowed
    with tdd(env.server, "CANCELLER", client("canceller")) as canceller:
        assert state_of(canceller, spare)[0] == NOT_AUTHORIZED  # query: refused


def test_only_the_holder_may_update_or_finish_and_an_ae_title_may_have_two_certificates(
    env: Env,
) -> None:
    txn = generate_uid()
    with tdd(env.server, "TMS") as tms:
        uid = create(tms, patient_id="PAT-HOLD")
    with tdd(env.server, "TDD1", client("tdd1")) as device:
        assert claim(device, uid, txn) == 0x0000
    before = env.snapshot()
    with tdd(env.server, "TDD2", client("tdd2")) as other:  # perform, but not the holder
        assert n_set(other, uid, **final_attributes(txn)) == NOT_AUTHORIZED
        done = {"ProcedureStepState": "COMPLETED", "TransactionUID": txn}
        assert action(other, uid, 1, **done) == NOT_AUTHORIZED
        assert "held by TDD1" in other.responses[-1].command_set.ErrorComment
    assert env.snapshot() == before
    # TDD1's second certificate is TDD1 all the same: it holds the workitem
    with tdd(env.server, "TDD1", client("tdd1b")) as spare_device:
        assert n_set(spare_device, uid, **final_attributes(txn)) == 0x0000
        done = {"ProcedureStepState": "COMPLETED", "TransactionUID": txn}
        assert action(spare_device, uid, 1, **done) == 0x0000


def test_a_certificate_bound_to_two_ae_titles_may_call_as_either(env: Env) -> None:
    assert echo(env, "TDD2", client("tdd2")).returncode == 0
    assert echo(env, "TDD2B", client("tdd2")).returncode == 0
    assert echo(env, "TDD1", client("tdd2")).returncode == 61


def test_a_new_device_is_authorized_by_pki_issue_without_a_restart(env: Env) -> None:
    assert echo(env, "TDD9", client("tdd1")).returncode == 61
    start = len(env.server.log_text())
    issued = subprocess.run(
        [
            *(sys.executable, "-m", "tdwii_cli", "pki", "issue", "client", "tdd9"),
            *("--ae-title", "TDD9", "--roles", "query", "--ae-config", "ae.json"),
        ],
        cwd=env.workdir,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert issued.returncode == 0, issued.stderr
    assert "TDD9 added to ae.json: certificates CN=tdd9; roles query" in issued.stdout
    env.server.wait_log("AE configuration ae.json reloaded", start)
    assert echo(env, "TDD9", client("tdd9")).returncode == 0
    with tdd(env.server, "TDD9", client("tdd9")) as reader:
        assert subscribe(reader, "TDD9") == NOT_AUTHORIZED  # query only: no watch


def test_the_old_format_without_authorize_behaves_as_before(pki_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(pki_dir, tmp_path / "certs")
    (tmp_path / "ae.json").write_text(
        json.dumps([{"AETitle": "WATCHER", "IPAddr": "127.0.0.1", "Port": free_port()}])
    )
    server = start_tdwii_server(tmp_path, "--ae-config", "ae.json", log_name="old")
    try:
        with tdd(server, "ANYONE") as anyone:  # any AE title, any certificate of the CA
            uid = create(anyone, patient_id="PAT-OLD")
            assert claim(anyone, uid, generate_uid()) == 0x0000
            assert subscribe(anyone, "WATCHER") == 0x0000
        assert "not enforced (no --authorize)" in server.log_text()
    finally:
        assert server.stop() == 0


def test_authorize_needs_mutual_tls_and_an_ae_configuration(pki_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(pki_dir, tmp_path / "certs")
    (tmp_path / "ae.json").write_text("[]")
    for args, words in (
        (["--authorize", "--ae-config", "ae.json"], "--authorize needs --mtls"),
        (["--mtls", "--authorize"], "--authorize needs --ae-config"),
    ):
        run = subprocess.run(
            [sys.executable, "-m", "tdwii_cli", "serve", "--port", "0", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert run.returncode == 1
        assert words in one_error_line(run)
        assert not (tmp_path / "tdwii.sqlite").exists()


# -- rights of an open association, rechecked before each change ----------------------------


@pytest.fixture
def own_pki_server(pki_dir: Path, tmp_path: Path) -> Iterator[Env]:
    """A server with a PKI of its own (its CRL changes) and a certificate that expires soon."""
    shutil.copytree(pki_dir, tmp_path / "certs")
    write_bindings(tmp_path / "certs", tmp_path / "ae.json", free_port())
    server = start_tdwii_server(tmp_path, "--ae-config", "ae.json", "--authorize", log_name="own")
    try:
        yield Env(tmp_path, server)
    finally:
        server.stop()


def test_a_certificate_revoked_while_associated_loses_its_rights_at_the_next_change(
    own_pki_server: Env,
) -> None:
    env = own_pki_server
    with tdd(env.server, "TMS") as tms:
        uid = create(tms, patient_id="PAT-REVOKE")
    txn = generate_uid()
    with tdd(env.server, "TDD1", client("tdd1")) as device:
        assert claim(device, uid, txn) == 0x0000
        start = len(env.server.log_text())
        revoked = subprocess.run(
            [sys.executable, "-m", "tdwii_cli", "pki", "revoke", "tdd1"],
            cwd=env.workdir,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert revoked.returncode == 0, revoked.stderr
        env.server.wait_log("CRL file changed", start)
        progress = Dataset()
        progress.ProcedureStepProgress = 10
        step = {"TransactionUID": txn, "ProcedureStepProgressInformationSequence": [progress]}
        assert n_set(device, uid, **step) == NOT_AUTHORIZED
        assert state_of(device, uid) == (0x0000, "IN PROGRESS")  # reads keep their rights
    assert "certificate is revoked" in env.server.log_text()[start:]
    # and no new association: the handshake refuses it
    assert echo(env, "TDD1", client("tdd1")).returncode == 63
    # TDD1's other certificate is not revoked: it may go on with the workitem
    with tdd(env.server, "TDD1", client("tdd1b")) as spare:
        assert n_set(spare, uid, **final_attributes(txn)) == 0x0000


def test_a_certificate_that_expires_while_associated_loses_its_rights(
    own_pki_server: Env,
) -> None:
    import datetime as dt
    import time

    env = own_pki_server
    certs = env.workdir / "certs"
    ends = dt.datetime.now(dt.timezone.utc).replace(microsecond=0) + dt.timedelta(seconds=4)
    write_leaf(certs / "clients" / "brief", certs, "brief", not_after=ends)
    aefile.update_entry(env.workdir / "ae.json", "BRIEF", "CN=brief", frozenset({"create"}))
    start = len(env.server.log_text())
    env.server.wait_log("AE configuration ae.json reloaded", start)
    with tdd(env.server, "BRIEF", client("brief")) as brief:
        assert create(brief, patient_id="PAT-BRIEF")
        wait_until(lambda: time.time() > ends.timestamp() + 0.5, 10, "the certificate to expire")
        attempt = Dataset()
        attempt.PatientID = "PAT-BRIEF"
        status, _ = brief.send_n_create(attempt, UPS_PUSH, generate_uid())
        assert status.Status == NOT_AUTHORIZED
        assert "certificate expired" in status.ErrorComment
