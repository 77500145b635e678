#!/usr/bin/env python3
"""Benchmark: a typical TDD C-FIND (SCHEDULED, this machine, today) against 10,000 workitems.

Fills a fresh store with `-n` workitems (spread over 20 machines and 30 days, a
quarter of them already COMPLETED), then measures the same query two ways:

- SQL only: `Query.from_identifier` + `WorkitemStore.select` + the post-filter and
  the response identifiers, in this process (what the server does per C-FIND);
- over a real association: `tdwii serve --mtls` in a subprocess on that database,
  tdwii's own client (mTLS, one association) timing each C-FIND from the request to
  the final response, and the server's own time for it (its -v log), and the
  server's CPU per C-FIND (from /proc), with matches and with none: their
  difference over the matches is the CPU per pending response;
- the typical query again with a client as it comes: a pynetdicom SCU with its defaults
  (Nagle on), `--repeat` C-FINDs on one association, each timed from the request to the
  final response, and the server's CPU per C-FIND. pynetdicom sends the command set and
  the identifier in two P-DATA-TF PDUs: with Nagle on the second waits for the server's
  ACK of the first. Against `--baseline` too. For reference, the same SCU with
  TCP_NODELAY set on its socket (what pynetdicom itself costs). `--no-pynetdicom` skips
  both;
- a universal query (every SCHEDULED workitem) against a server with a 1 s idle
  timeout: the stream takes longer than that and must not be cut.

    python bench/cfind_10k.py [-n 10000] [--repeat 50] [--db FILE] [--baseline SRC]
                              [--no-pynetdicom]

Prints p50/p90/max in milliseconds and the number of matches.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from tdwii_cli.dicom import codec
from tdwii_cli.dicom.uids import EXPLICIT_VR_LE
from tdwii_cli.net import dimse
from tdwii_cli.net.association import open_association, propose
from tdwii_cli.net.dimse import Command
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.pki.authority import init_pki
from tdwii_cli.server.store import WorkitemStore
from tdwii_cli.tls.context import build_client_context
from tdwii_cli.tls.options import resolve
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
            out = [
                compiled.response_bytes(w.blob) for w in rows if compiled.post_filter_blob(w.blob)
            ]  # what the server does
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


class Served:
    """`tdwii serve --mtls` on a database, in a subprocess, logging at -v to a file."""

    def __init__(self, work: Path, db: Path, *extra: str, src: Path | None = None) -> None:
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=str(src.resolve())) if src else None
        self.log = work / f"serve-{self.port}.log"
        cmd = [sys.executable, "-m", "tdwii_cli", "serve", "--mtls", "--port", str(self.port)]
        cmd += ["-ba", "127.0.0.1", "--db", str(db), "-v", *extra]
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=fh, env=env
            )
        deadline = time.monotonic() + 30
        while "listening on" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"tdwii serve did not start: {self.proc.poll()}")
            time.sleep(0.05)

    def server_times(self) -> list[float]:
        """Seconds from each C-FIND-RQ received to its final response sent (its log)."""
        found = re.findall(
            r"sent C-FIND-RSP id=\d+ status 0x0000.* in ([0-9.]+) ms", self.log.read_text()
        )
        return [float(ms) / 1000 for ms in found]

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(20)


def over_association(
    work: Path, server: Served, query: Dataset, repeat: int
) -> tuple[list[float], int, float]:
    """`repeat` C-FINDs on one mTLS association with tdwii's own client: each one's time
    from request to final response, the matches, the server's CPU per C-FIND."""
    certs = work / "certs"
    tls = resolve(
        "client",
        mtls=True,
        ca=[certs / "rootCA" / "rootCA.pem"],
        cert=certs / "clients" / "workitemcreator" / "workitemcreator.pem",
        key=certs / "clients" / "workitemcreator" / "workitemcreator.key",
    )
    ctx = build_client_context(tls)
    identifier = codec.encode(query, EXPLICIT_VR_LE)
    options = ScuOptions(calling_aet="TDD", called_aet="UPSSCP")
    times, matches = [], 0
    with open_association("127.0.0.1", server.port, ctx, options, propose([UPS_PULL])) as assoc:
        cx = assoc.context(UPS_PULL)
        cpu0 = cpu_seconds(server.proc.pid)
        for _ in range(repeat):
            rq = Command(
                dimse.C_FIND_RQ,
                message_id=assoc.next_message_id(),
                sop_class=UPS_PULL,
                priority=0,
                has_dataset=True,
            )
            start = time.perf_counter()
            found = 0
            for message in assoc.request(rq, identifier, cx):
                status = message.command.status
                if status in (0xFF00, 0xFF01):
                    found += 1
                elif status != 0:
                    raise RuntimeError(f"C-FIND status 0x{status:04X}")
            times.append(time.perf_counter() - start)
            matches = found
        cpu = cpu_seconds(server.proc.pid) - cpu0
    return times, matches, cpu / repeat


def pynetdicom_find(
    work: Path, server: Served, query: Dataset, repeat: int, nodelay: bool = False
) -> tuple[list[float], int, float]:
    """The same as `over_association` with a pynetdicom SCU as it comes (its defaults: Nagle
    on, every identifier decoded with pydicom), or with TCP_NODELAY set on its socket."""
    import ssl

    from pynetdicom import AE, evt

    def tuned(event: evt.Event) -> None:
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    certs = work / "certs"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs / "rootCA" / "rootCA.pem")
    node = certs / "clients" / "workitemcreator" / "workitemcreator"
    ctx.load_cert_chain(f"{node}.pem", f"{node}.key")
    ae = AE(ae_title="TDD")
    ae.add_requested_context(UPS_PULL, [EXPLICIT_VR_LE, "1.2.840.10008.1.2"])
    assoc = ae.associate("127.0.0.1", server.port, ae_title="UPSSCP", tls_args=(ctx, "localhost"))
    if not assoc.is_established:
        raise RuntimeError("pynetdicom: association not established")
    times, matches = [], 0
    try:
        cpu0 = cpu_seconds(server.proc.pid)
        for _ in range(repeat):
            start = time.perf_counter()
            found = 0
            for status, _identifier in assoc.send_c_find(query, UPS_PULL):
                code = status.Status if status else None
                if code in (0xFF00, 0xFF01):
                    found += 1
                elif code != 0:
                    raise RuntimeError(f"pynetdicom: C-FIND status {code}")
            times.append(time.perf_counter() - start)
            matches = found
        cpu = cpu_seconds(server.proc.pid) - cpu0
    finally:
        assoc.release()
    return times, matches, cpu / repeat


def everything() -> Dataset:
    """A universal query: every SCHEDULED workitem, the usual return keys."""
    q = tdd_query(START, "TB00")
    del q.ScheduledStationNameCodeSequence
    q.ScheduledProcedureStepStartDateTime = ""
    return q


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=10_000, help="workitems in the store")
    parser.add_argument("--repeat", type=int, default=50, help="queries measured each way")
    parser.add_argument("--db", type=Path, help="reuse (or keep) this filled database")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="SRC",
        help="also run the typical query against the tdwii serve in this src folder",
    )
    parser.add_argument(
        "--no-pynetdicom", action="store_true", help="no run with a pynetdicom SCU as it comes"
    )
    args = parser.parse_args()
    field = not args.no_pynetdicom
    if field:
        try:
            import pynetdicom  # noqa: F401
        except ImportError:
            print("pynetdicom not installed: no run with a client as it comes", file=sys.stderr)
            field = False
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
        server = Served(work, db)
        try:
            times, matches, cpu = over_association(work, server, query, args.repeat)
            figures("C-FIND over mTLS (tdwii serve)", times, matches)
            figures("  the same, at the server", server.server_times(), matches)
            empty = tdd_query(START + timedelta(days=4), "TB99")
            none_times, _none, none_cpu = over_association(work, server, empty, args.repeat)
            figures("C-FIND over mTLS, no match", none_times, 0)
            print(f"server CPU per C-FIND: {cpu * 1000:.2f} ms ({matches} matches), "
                  f"{none_cpu * 1000:.2f} ms (no match)")  # fmt: skip
            if matches:
                each = (cpu - none_cpu) / matches
                print(f"server CPU per pending response: {each * 1000:.3f} ms")
            if field:
                times, matches, cpu = pynetdicom_find(work, server, query, args.repeat)
                figures("pynetdicom SCU (as it comes)", times, matches)
                print(f"  server CPU per C-FIND: {cpu * 1000:.2f} ms ({matches} matches)")
                times, matches, cpu = pynetdicom_find(work, server, query, args.repeat, True)
                figures("pynetdicom SCU with TCP_NODELAY", times, matches)
                print(f"  server CPU per C-FIND: {cpu * 1000:.2f} ms ({matches} matches)")
        finally:
            server.stop()
        if args.baseline:
            base = Served(work, db, src=args.baseline)
            try:
                times, matches, cpu = over_association(work, base, query, args.repeat)
                figures("baseline: C-FIND over mTLS", times, matches)
                if base.server_times():  # (an older server may not log its final response)
                    figures("  the same, at the server", base.server_times(), matches)
                print(f"baseline server CPU per C-FIND: {cpu * 1000:.2f} ms ({matches} matches)")
                if field:
                    times, matches, cpu = pynetdicom_find(work, base, query, args.repeat)
                    figures("baseline: pynetdicom SCU", times, matches)
                    print(f"  server CPU per C-FIND: {cpu * 1000:.2f} ms ({matches} matches)")
            finally:
                base.stop()
        # a long stream with a short idle timeout: it must not be cut
        server = Served(work, db, "-tn", "1")
        try:
            big, big_matches, big_cpu = over_association(work, server, everything(), 1)
            per = (big_cpu - none_cpu) / max(1, big_matches)
            print(
                f"universal C-FIND with -tn 1: {big_matches} matches streamed in "
                f"{big[0]:.1f} s, not cut; server CPU per pending response {per * 1000:.3f} ms"
            )
        finally:
            server.stop()


if __name__ == "__main__":
    main()
