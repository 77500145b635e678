#!/usr/bin/env python3
"""Benchmark: a typical TDD C-FIND (SCHEDULED, this machine, today) against 10,000 workitems.

Fills a fresh store with `-n` workitems (spread over 20 machines and 30 days, a
quarter of them already COMPLETED), then measures the same query two ways:

- SQL only: `Query.from_identifier` + `WorkitemStore.select` + the post-filter and
  the response identifiers, in this process (what the server does per C-FIND);
- over a real association: `tdwii serve --mtls` in a subprocess on that database,
  a pynetdicom client (mTLS, one association, TCP_NODELAY) timing each C-FIND from
  the request to the final response.

    python bench/cfind_10k.py [-n 10000] [--repeat 50]

Prints p50/p90/max in milliseconds and the number of matches.
"""

from __future__ import annotations

import argparse
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE, evt

from tdwii_cli.pki.authority import init_pki
from tdwii_cli.server.store import WorkitemStore
from tdwii_cli.ups.matching import Query
from tdwii_cli.ups.workitem import build_workitem

UPS_PULL = "1.2.840.10008.5.1.4.34.6.3"
MACHINES = 20
DAYS = 30
START = datetime(2031, 3, 1, 7, 0, 0)


def fill(db: Path, count: int) -> None:
    """`count` workitems: machine i % 20, day (i // 20) % 30, one round in four COMPLETED."""
    with WorkitemStore(db) as store, store.transaction():
        template = build_workitem(patient_id="P", patient_name="Bench^Patient", label="Fx")
        for i in range(count):
            machine = f"TB{i % MACHINES:02d}"
            when = START + timedelta(days=(i // MACHINES) % DAYS, minutes=(i * 7) % 600)
            ds = build_workitem(
                patient_id=f"PAT-{i:05d}",
                patient_name=f"Bench^Patient{i}",
                label=f"Fx {i % 30 + 1}",
                station=machine,
                scheduled=when,
                study_uid=template.StudyInstanceUID if "StudyInstanceUID" in template else None,
            )
            if (i // MACHINES) % 4 == 3:
                ds.ProcedureStepState = "COMPLETED"
            store.create(ds)


def tdd_query(day: datetime, machine: str) -> Dataset:
    """What a treatment delivery device asks: its SCHEDULED steps for one day."""
    station = Dataset()
    station.CodeValue = machine
    station.CodingSchemeDesignator = "99IHERO2008"
    q = Dataset()
    q.ProcedureStepState = "SCHEDULED"
    q.ScheduledStationNameCodeSequence = Sequence([station])
    text = day.strftime("%Y%m%d")
    q.ScheduledProcedureStepStartDateTime = f"{text}000000-{text}235959"
    q.SOPInstanceUID = ""
    q.PatientName = ""
    q.PatientID = ""
    q.ProcedureStepLabel = ""
    q.ScheduledProcedureStepPriority = ""
    q.InputReadinessState = ""
    q.ScheduledWorkitemCodeSequence = Sequence()
    return q


def figures(name: str, seconds: list[float], matches: int) -> None:
    ms = sorted(s * 1000 for s in seconds)
    p90 = ms[int(len(ms) * 0.9) - 1] if len(ms) >= 10 else ms[-1]
    print(
        f"{name:<34} p50 {statistics.median(ms):7.2f} ms  p90 {p90:7.2f} ms  "
        f"max {ms[-1]:7.2f} ms  ({matches} matches, {len(ms)} runs)"
    )


def sql_only(db: Path, query: Dataset, repeat: int) -> tuple[list[float], int]:
    times, matches = [], 0
    with WorkitemStore(db) as store:
        for _ in range(repeat):
            start = time.perf_counter()
            compiled = Query.from_identifier(query)
            rows = store.select(compiled.where, compiled.params)
            out = [compiled.response(w.dataset) for w in rows if compiled.post_filter(w.dataset)]
            times.append(time.perf_counter() - start)
            matches = len(out)
        plan = store.conn.execute(
            f"EXPLAIN QUERY PLAN SELECT uid FROM workitems WHERE {compiled.where}",
            compiled.params,
        ).fetchall()
    print("query plan:", "; ".join(str(row[-1]) for row in plan))
    print("SQL:", compiled.where, "| post-filter keys:", len(compiled.residual))
    return times, matches


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (Linux /proc), 0.0 elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def over_association(
    work: Path, db: Path, query: Dataset, repeat: int, verbose: bool = False
) -> tuple[list[float], int]:
    port = free_port()
    log = (work / "serve.log").open("wb")
    cmd = [sys.executable, "-m", "tdwii_cli", "serve", "--mtls", "--port", str(port)]
    cmd += ["-ba", "127.0.0.1", "--db", str(db), "-v" if verbose else "-q"]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=log)
    try:
        certs = work / "certs"
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(certs / "rootCA" / "rootCA.pem")
        node = certs / "clients" / "workitemcreator" / "workitemcreator"
        ctx.load_cert_chain(f"{node}.pem", f"{node}.key")
        ae = AE(ae_title="TDD")
        ae.add_requested_context(UPS_PULL)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30

        def nodelay(event: object) -> None:
            sock = event.assoc.dul.socket.socket  # type: ignore[attr-defined]
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        deadline = time.monotonic() + 30
        while True:
            assoc = ae.associate(
                "127.0.0.1",
                port,
                tls_args=(ctx, "localhost"),
                evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)],
            )
            if assoc.is_established:
                # pynetdicom's client naps 1 ms per reactor loop by default (as tdwii's scu)
                assoc.dul._run_loop_delay = 0.0002
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tdwii serve did not answer: {proc.poll()}")
            time.sleep(0.3)
        times, matches = [], 0
        server_cpu, client_cpu = cpu_seconds(proc.pid), time.process_time()
        try:
            for _ in range(repeat):
                start = time.perf_counter()
                found = 0
                for status, _identifier in assoc.send_c_find(query, UPS_PULL):
                    if status is None or "Status" not in status:
                        raise RuntimeError("C-FIND: no response")
                    if status.Status in (0xFF00, 0xFF01):
                        found += 1
                    elif status.Status != 0:
                        raise RuntimeError(f"C-FIND status 0x{status.Status:04X}")
                times.append(time.perf_counter() - start)
                matches = found
        finally:
            assoc.release()
        server_cpu = cpu_seconds(proc.pid) - server_cpu
        client_cpu = time.process_time() - client_cpu
        print(
            f"CPU per C-FIND: server {server_cpu * 1000 / repeat:.1f} ms, "
            f"pynetdicom client {client_cpu * 1000 / repeat:.1f} ms (2 cores shared)"
        )
        return times, matches
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="workitems in the store")
    parser.add_argument("--repeat", type=int, default=50, help="queries measured each way")
    parser.add_argument("--db", type=Path, help="reuse (or keep) this filled database")
    parser.add_argument("-v", action="store_true", help="serve with -v; print its C-FIND lines")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tdwii-cfind-") as tmp:
        work = Path(tmp)
        init_pki(work / "certs")
        db = args.db or work / "bench.sqlite"
        if not db.exists():
            start = time.perf_counter()
            fill(db, args.n)
            print(f"filled {args.n} workitems in {time.perf_counter() - start:.1f} s")
        query = tdd_query(START + timedelta(days=4), "TB07")
        figures("SQL only (compile+select+respond)", *sql_only(db, query, args.repeat))
        times, matches = over_association(work, db, query, args.repeat, args.v)
        figures("C-FIND over mTLS (tdwii serve)", times, matches)
        # the same query for a machine with no workitems: the fixed cost, no responses
        empty = tdd_query(START + timedelta(days=4), "TB99")
        none_times, none_matches = over_association(work, db, empty, args.repeat)
        figures("C-FIND over mTLS, no match", none_times, none_matches)
        if matches:
            each = (statistics.median(times) - statistics.median(none_times)) / matches
            print(f"per pending response: {each * 1000:.2f} ms (server + client, one association)")
        if args.v:
            lines = (work / "serve.log").read_text().splitlines()
            print("\n".join([line for line in lines if "C-FIND" in line][-6:]))


if __name__ == "__main__":
    main()
