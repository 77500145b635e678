#!/usr/bin/env python3
"""Benchmark: `tdwii ups find` as a whole process against 10,000 workitems, and `watch` latency.

Makes a fresh PKI (`tdwii pki init`) in a temp folder, fills a store with
`--workitems` workitems (25 stations x 20 days, so one station on one day matches
20; the first 5 days COMPLETED, the rest SCHEDULED), starts `tdwii serve --mtls` on
it (a free loopback port, an AE configuration that knows WATCHER), then:

1. times the whole `python -m tdwii_cli ups find --mtls 127.0.0.1 PORT --station S
   --date DAY -aec ANY` process (stdout to a file: the plain table, not rich) and the
   whole `python -m tdwii_cli echo --mtls 127.0.0.1 PORT -aec ANY` process, `-n` runs
   each, interleaved (alternating which goes first), after one untimed warm-up each;
   prints p50/min of both, the ratio find/echo and the rows the find printed;
2. starts `python -m tdwii_cli ups watch --mtls -p WPORT -ba 127.0.0.1 -aet WATCHER
   --json`, subscribes WATCHER globally (`tdwii ups subscribe --receiving-ae WATCHER`),
   waits for the initial State Reports (one per SCHEDULED workitem) to drain, then
   claims `--claims` SCHEDULED workitems one by one from this process (one mTLS
   association, `client.procedure.claim`) and takes, for each, the moment a reader
   thread reads watch's IN PROGRESS State Report line minus the moment `claim`
   returned (and the same from its "time" field). The server's event worker opens an
   association for each burst and releases it once its queue is empty, so each of
   these reports comes with a TLS handshake and an A-ASSOCIATE; the first is shown
   apart, p50/p90/max are of the rest. `ups subscribe` gets `-td 300`: the server
   answers a global Subscribe once every initial report is journaled (one commit;
   7,500 took 2 s here, 15-21 s before that was batched);
3. claims `--scu-claims` more SCHEDULED workitems the same way with a client as it comes:
   a pynetdicom SCU with its defaults (Nagle on; one association, N-ACTION Change State
   with a Transaction UID, as a delivery device sends it). pynetdicom sends the command
   set and the data set in two P-DATA-TF PDUs, so with Nagle on the second waits for the
   server's ACK of the first; the claim's round trip and the watch latency after it are
   printed apart. `--scu-claims 0` skips it.

The find and echo timed in 1. are our own CLI's whole processes (what they measure is
tdwii's start-up and client); a pynetdicom C-FIND as it comes is in `bench/cfind_10k.py`.

Bytecode: with PYTHONDONTWRITEBYTECODE=1 an editable install recompiles every module
on every run, which no installed tdwii does; the commands therefore run with
PYTHONPYCACHEPREFIX in the temp folder and bytecode writing on (the warm-up fills it),
so nothing is written in the source tree. `--no-pyc` keeps the environment as it is.

    python bench/ups_find.py [-n 21] [--claims 50] [--scu-claims 20] [--workitems 10000]
                             [--no-pyc] [--db FILE] [--keep DIR]

Prints figures only; the targets (find within 1.5x echo, watch p50 <= 20 ms) are
shown next to them, not asserted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

from tdwii_cli.client.peer import Peer
from tdwii_cli.client.procedure import claim, new_transaction_uid
from tdwii_cli.client.upsclient import connect
from tdwii_cli.dicom.uids import UPS_PULL
from tdwii_cli.net.options import ScuOptions
from tdwii_cli.server.store import WorkitemStore, decode_dataset, encode_dataset
from tdwii_cli.tls.options import resolve
from tdwii_cli.ups.workitem import build_workitem

TDWII = [sys.executable, "-m", "tdwii_cli"]
STATIONS = 25
DAYS = 20
COMPLETED_DAYS = 5  # the first days are over
START = datetime(2031, 3, 1, 7, 0, 0)
QUERY_STATION, QUERY_DAY = 7, 10  # TB07 on 2031-03-11
WATCHER = "WATCHER"


def station_name(index: int) -> str:
    return f"TB{index:02d}"


def placement(i: int) -> tuple[int, int, int]:
    """Workitem `i`'s station, day and minutes after 07:00 (20 a station-day at 10k)."""
    station = i % STATIONS
    day = (i // STATIONS) % DAYS
    minutes = (i // (STATIONS * DAYS) * 29) % 600
    return station, day, minutes


def build_chunk(indices: range) -> list[bytes]:
    """Workitems `indices`, built and encoded in the stored form (in a worker process)."""
    out = []
    for i in indices:
        station, day, minutes = placement(i)
        ds = build_workitem(
            patient_id=f"PAT-{i:05d}",
            patient_name=f"Bench^Patient{i}",
            label=f"Fx {i % 30 + 1}",
            station=station_name(station),
            scheduled=START + timedelta(days=day, minutes=minutes),
        )
        if day < COMPLETED_DAYS:
            ds.ProcedureStepState = "COMPLETED"
        out.append(encode_dataset(ds))
    return out


def fill(db: Path, count: int) -> None:
    """`count` workitems straight into the store, in one transaction (built and encoded by
    one worker process per CPU)."""
    chunks = [range(i, min(count, i + 250)) for i in range(0, count, 250)]
    with ProcessPoolExecutor(os.cpu_count() or 1) as pool:
        built = pool.map(build_chunk, chunks)  # the workers start (fork) before the store opens
        with WorkitemStore(db) as store, store.transaction():
            for chunk in built:
                for blob in chunk:
                    store.create(decode_dataset(blob), encoded=blob)


def scheduled_uids(db: Path) -> list[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        found = conn.execute("SELECT uid FROM workitems WHERE state = 'SCHEDULED' ORDER BY rowid")
        return [row[0] for row in found]


def total(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT COUNT(*) FROM workitems").fetchone()[0])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def shown(cmd: list[str]) -> str:
    return " ".join(["python", *cmd[1:]])


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


class Process:
    """A long-running tdwii subprocess (cwd = the PKI folder), its stderr in a log file,
    started once its banner ('listening on') is there."""

    def __init__(
        self, name: str, work: Path, args: list[str], env: dict[str, str], stdout: int
    ) -> None:
        self.name = name
        self.log = work / f"{name}.log"
        with self.log.open("wb") as fh:
            self.proc = subprocess.Popen(
                [*TDWII, *args], cwd=work, env=env, stdout=stdout, stderr=fh
            )
        deadline = time.monotonic() + 30
        while "listening on" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"{name} did not start ({self.proc.poll()}):\n{self.tail()}")
            time.sleep(0.02)

    def tail(self, chars: int = 2000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


class Reports:
    """Reads watch's JSON lines in a thread: the moment each line is read (time.time()),
    its "time" field; the initial SCHEDULED State Reports are counted."""

    def __init__(self, stream) -> None:  # type: ignore[no-untyped-def]
        self.stream = stream
        self.cond = threading.Condition()
        self.in_progress: dict[str, tuple[float, float]] = {}
        self.initial = 0
        self.other = 0
        self.last_line = time.monotonic()
        self.closed = False
        self.thread = threading.Thread(target=self._run, name="watch-reader", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with contextlib.suppress(OSError, ValueError):  # the pipe closed under us at the end
            self._read()
        with self.cond:
            self.closed = True
            self.cond.notify_all()

    def _read(self) -> None:
        for line in self.stream:
            read = time.time()
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            with self.cond:
                self.last_line = time.monotonic()
                if doc.get("event") == "State Report" and doc.get("state") == "IN PROGRESS":
                    stamp = datetime.fromisoformat(doc["time"]).timestamp()  # local, naive
                    self.in_progress[doc["uid"]] = (read, stamp)
                elif doc.get("event") == "State Report" and doc.get("state") == "SCHEDULED":
                    self.initial += 1
                else:
                    self.other += 1
                self.cond.notify_all()

    def wait_initial(self, expected: int, quiet: float = 30.0) -> int:
        """Until `expected` initial reports are in (or none came for `quiet` s); how many."""
        with self.cond:
            while self.initial < expected and not self.closed:
                if time.monotonic() - self.last_line > quiet:
                    break
                self.cond.wait(0.5)
            return self.initial

    def wait_for(self, uid: str, timeout: float = 30.0) -> tuple[float, float] | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while uid not in self.in_progress and not self.closed:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.in_progress.get(uid)


def timed(cmd: list[str], work: Path, env: dict[str, str], out: Path | None) -> float:
    """Whole-process wall time of `cmd` (stdout to `out` or /dev/null)."""
    with out.open("wb") if out is not None else open(os.devnull, "wb") as fh:
        start = time.perf_counter()
        result = subprocess.run(cmd, cwd=work, env=env, stdout=fh, stderr=subprocess.PIPE)
        wall = time.perf_counter() - start
    if result.returncode != 0:
        sys.stderr.write(result.stderr.decode(errors="replace")[-2000:])
        raise SystemExit(f"{shown(cmd)} exited {result.returncode}")
    return wall


def rows(path: Path) -> int:
    """Rows of the plain worklist table: its lines minus the header."""
    lines = [x for x in path.read_text().splitlines() if x.strip()]
    return max(0, len(lines) - 1)


def bench_find(
    work: Path, port: int, env: dict[str, str], runs: int, expected: int
) -> tuple[list[float], list[float], int]:
    day = (START + timedelta(days=QUERY_DAY)).date().isoformat()
    find = [*TDWII, "ups", "find", "--mtls", "127.0.0.1", str(port),
            "--station", station_name(QUERY_STATION), "--date", day, "-aec", "ANY"]  # fmt: skip
    echo = [*TDWII, "echo", "--mtls", "127.0.0.1", str(port), "-aec", "ANY"]
    print("find:", shown(find))
    print("echo:", shown(echo))
    out = work / "find.out"
    timed(find, work, env, out)  # warm-up (and the bytecode cache)
    timed(echo, work, env, None)
    finds: list[float] = []
    echoes: list[float] = []
    counts = set()
    for run in range(runs):
        first_find = run % 2 == 0  # interleaved, alternating the order
        if first_find:
            finds.append(timed(find, work, env, out))
            counts.add(rows(out))
        echoes.append(timed(echo, work, env, None))
        if not first_find:
            finds.append(timed(find, work, env, out))
            counts.add(rows(out))
    found = rows(out)
    if counts != {expected}:
        print(f"WARNING: find printed {sorted(counts)} row(s), expected {expected}")
    return finds, echoes, found


def pynetdicom_claims(
    work: Path, port: int, uids: list[str], reports: Reports
) -> list[tuple[float, float, float]]:
    """Claim `uids` one by one with a pynetdicom SCU as it comes (its defaults, Nagle on);
    for each (claim round trip, line read - claim returned, "time" field - claim returned)."""
    import ssl

    from pydicom.dataset import Dataset
    from pynetdicom import AE

    certs = work / "certs"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs / "rootCA" / "rootCA.pem")
    node = certs / "clients" / "workitemcreator" / "workitemcreator"
    ctx.load_cert_chain(f"{node}.pem", f"{node}.key")
    ae = AE(ae_title="TDD")
    ae.add_requested_context(UPS_PULL, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    assoc = ae.associate("127.0.0.1", port, ae_title="ANY", tls_args=(ctx, "localhost"))
    if not assoc.is_established:
        raise SystemExit("pynetdicom: association not established")
    results = []
    try:
        for uid in uids:
            info = Dataset()
            info.ProcedureStepState = "IN PROGRESS"
            info.TransactionUID = new_transaction_uid()
            sent = time.time()
            status, _reply = assoc.send_n_action(info, 1, UPS_PULL, uid)
            returned = time.time()
            if not status or status.Status != 0:
                raise SystemExit(f"pynetdicom: claim {uid}: status {status}")
            seen = reports.wait_for(uid)
            if seen is None:
                print(f"WARNING: no IN PROGRESS State Report for {uid} within 30 s")
                continue
            read, stamp = seen
            results.append((returned - sent, read - returned, stamp - returned))
    finally:
        assoc.release()
    return results


def bench_watch(
    work: Path,
    port: int,
    wport: int,
    env: dict[str, str],
    uids: list[str],
    initial: int,
    scu_uids: list[str],
) -> tuple[list[tuple[float, float, float]], list[tuple[float, float, float]], Process]:
    """Subscribe WATCHER, drain the initial reports, claim `uids` one by one with tdwii's
    client, then `scu_uids` with pynetdicom's; for each (claim round trip, line read - claim
    returned, "time" field - claim returned)."""
    args = ["ups", "watch", "--mtls", "-p", str(wport), "-ba", "127.0.0.1",
            "-aet", WATCHER, "--json"]  # fmt: skip
    watch = Process("watch", work, args, env, subprocess.PIPE)
    try:
        reports = Reports(watch.proc.stdout)
        # -td 300: the server answers the Subscribe once every initial report is queued
        sub = [*TDWII, "ups", "subscribe", "--mtls", "127.0.0.1", str(port),
               "--receiving-ae", WATCHER, "-aec", "ANY", "-td", "300"]  # fmt: skip
        print("watch:", shown([*TDWII, *args]))
        print("subscribe:", shown(sub))
        started = time.perf_counter()
        timed(sub, work, env, None)
        subscribed = time.perf_counter() - started
        got = reports.wait_initial(initial)
        drained = time.perf_counter() - started
        print(
            f"subscribe (whole process): {subscribed:.1f} s; {got} of {initial} initial "
            f"State Reports received in {drained:.1f} s ({got / drained:.0f}/s)"
        )
        time.sleep(0.5)  # let the server's event worker release its association
        certs = work / "certs"
        tls = resolve(
            "client",
            mtls=True,
            ca=[certs / "rootCA" / "rootCA.pem"],
            cert=certs / "clients" / "workitemcreator" / "workitemcreator.pem",
            key=certs / "clients" / "workitemcreator" / "workitemcreator.key",
        )  # = resolve("client", mtls=True) with cwd = the PKI folder
        peer = Peer("127.0.0.1", port, tls, ScuOptions(called_aet="ANY"))
        results = []
        with connect(peer, [UPS_PULL]) as client:
            for uid in uids:
                sent = time.time()
                claim(client, uid, new_transaction_uid())
                returned = time.time()
                seen = reports.wait_for(uid)
                if seen is None:
                    print(f"WARNING: no IN PROGRESS State Report for {uid} within 30 s")
                    continue
                read, stamp = seen
                results.append((returned - sent, read - returned, stamp - returned))
        scu = pynetdicom_claims(work, port, scu_uids, reports) if scu_uids else []
        return results, scu, watch
    except BaseException:
        watch.stop()
        raise


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--runs", type=int, default=21, help="find/echo runs (21)")
    parser.add_argument("--claims", type=int, default=50, help="claims timed for watch (50)")
    parser.add_argument(
        "--scu-claims", type=int, default=20, help="claims by a pynetdicom SCU as it comes (20)"
    )
    parser.add_argument("--workitems", type=int, default=10_000, help="in the store (10000)")
    parser.add_argument("--no-pyc", action="store_true", help="bytecode as the environment says")
    parser.add_argument(
        "--db", type=Path, help="start from a copy of this filled store (filled there if missing)"
    )
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="tdwii-upsfind-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        if not args.no_pyc:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
        if not (work / "certs").exists():
            subprocess.run([*TDWII, "pki", "init", "-q"], cwd=work, env=env, check=True,
                           stdout=subprocess.DEVNULL)  # fmt: skip
        db = work / f"ups-{args.workitems}.sqlite"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)  # claimed by a previous --keep run
        if args.db is not None and args.db.exists():
            shutil.copyfile(args.db, db)
            print(f"copied the filled store {args.db}")
        else:
            started = time.perf_counter()
            fill(db, args.workitems)
            print(f"filled {args.workitems} workitems in {time.perf_counter() - started:.1f} s")
            if args.db is not None:
                shutil.copyfile(db, args.db)
        scheduled, count = scheduled_uids(db), total(db)
        print(f"store: {count} workitems, {len(scheduled)} SCHEDULED")
        expected = sum(1 for i in range(count) if placement(i)[:2] == (QUERY_STATION, QUERY_DAY))
        if args.scu_claims:
            try:
                import pynetdicom  # noqa: F401
            except ImportError:
                print("pynetdicom not installed: no claims as they come", file=sys.stderr)
                args.scu_claims = 0
        wanted = args.claims + args.scu_claims
        if wanted > len(scheduled):
            raise SystemExit(f"{wanted} claims: only {len(scheduled)} SCHEDULED")
        wport = free_port()
        ae_config = work / "ApplicationEntities.json"
        ae_config.write_text(
            json.dumps([{"AETitle": WATCHER, "IPAddr": "127.0.0.1", "Port": wport, "mTLS": True}])
        )
        port = free_port()
        serve = ["serve", "--mtls", "--port", str(port), "-ba", "127.0.0.1", "--db", str(db),
                 "--ae-config", str(ae_config)]  # fmt: skip
        print("serve:", shown([*TDWII, *serve]))
        server = Process("serve", work, serve, env, subprocess.DEVNULL)
        watch = None
        try:
            finds, echoes, found = bench_find(work, port, env, args.runs, expected)
            f50, e50 = statistics.median(finds), statistics.median(echoes)
            pairs = sorted(f / e for f, e in zip(finds, echoes, strict=True))
            print(
                f"ups find: p50 {ms(f50)} ms, min {ms(min(finds))} ms ({found} rows printed)\n"
                f"echo:     p50 {ms(e50)} ms, min {ms(min(echoes))} ms\n"
                f"find/echo: {f50 / e50:.2f}x the p50, {min(finds) / min(echoes):.2f}x the min, "
                f"per run {statistics.median(pairs):.2f}x ({pairs[0]:.2f}-{pairs[-1]:.2f}x), "
                f"{args.runs} interleaved runs"
            )
            mine = scheduled[len(scheduled) - args.claims :]
            theirs = scheduled[len(scheduled) - wanted : len(scheduled) - args.claims]
            results, scu, watch = bench_watch(work, port, wport, env, mine, len(scheduled), theirs)
        except BaseException:
            print(f"serve log:\n{server.tail()}", file=sys.stderr)
            if (work / "watch.log").exists():
                print(f"watch log:\n{(work / 'watch.log').read_text()[-2000:]}", file=sys.stderr)
            raise
        finally:
            if watch is not None:
                watch.stop()
            server.stop()

    print(
        f"\nups find ({found} matches of {count}): p50 {ms(f50)} ms, "
        f"echo p50 {ms(e50)} ms, ratio {f50 / e50:.2f} (target <= 1.5)"
    )
    if not results:
        print("watch latency over mTLS: no report received")
        return 1
    first, rest = results[0], results[1:] or results
    read = [r[1] for r in rest]
    stamp = [r[2] for r in rest]
    trips = [r[0] for r in results]
    print(
        f"watch latency over mTLS: p50 {ms(statistics.median(read))} ms, "
        f"p90 {ms(pct(read, 0.9))} ms, max {ms(max(read))} ms ({len(rest)} reports"
        f"{' after the first' if len(results) > 1 else ''}; target p50 <= 20)"
    )
    print(
        f"  by watch's 'time' field (ms resolution): p50 {ms(statistics.median(stamp))} ms, "
        f"p90 {ms(pct(stamp, 0.9))} ms, max {ms(max(stamp))} ms"
    )
    print(f"  first report: {ms(first[1])} ms ('time' field {ms(first[2])} ms)")
    print(
        f"  the claim's own round trip: p50 {ms(statistics.median(trips))} ms, "
        f"max {ms(max(trips))} ms"
    )
    if scu:
        read = [r[1] for r in scu]
        trips = [r[0] for r in scu]
        print(
            f"claims by a pynetdicom SCU as it comes (Nagle on), {len(scu)}: the claim's round "
            f"trip p50 {ms(statistics.median(trips))} ms, p90 {ms(pct(trips, 0.9))} ms, max "
            f"{ms(max(trips))} ms; then watch's report p50 {ms(statistics.median(read))} ms, "
            f"max {ms(max(read))} ms"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
