#!/usr/bin/env python3
"""Benchmark: sequential mTLS associations (associate, C-ECHO, release) against
`tdwii serve --mtls` and DCMTK `storescp +tls`, measured the same way in the same run,
with a tuned client and with clients as they come.

Client kinds (`--client`, all by default):

- `tuned`: a small DICOM client written directly on `socket` + `ssl` (the PDUs written by
  hand in `bench/echo_pdus.py`, no tdwii upper layer), with TCP_NODELAY, so that it adds
  well under a millisecond;
- `nagle`: the same client with Nagle's algorithm left on, as DCMTK (by default),
  pynetdicom, Java's sockets and dcmjs-dimse leave it: a client as it comes;
- `pynetdicom`: a pynetdicom SCU with its defaults (`AE.associate(..., tls_args=(ctx,
  "localhost"))`, `send_c_echo()`, `release()`; Nagle on), which adds its own overhead;
- `dcmtk`: DCMTK's `echoscu +tls` with its defaults (no TCP_NODELAY in its environment),
  the whole process timed, one at a time; reported apart from the in-process rates.

Every association is a new TCP connection and a full TLS handshake (no session
resumption) for every server. The in-process kinds run with one client and with four
client processes at once (`--clients`); the server's CPU time (user + system, from
/proc) is divided by the associations it served.

Servers: `tdwii serve --mtls` (checking the CRL of `tdwii pki init`), the same with
`--no-crl`, `--baseline SRC` (an older tdwii), `bench/bare_tls_server.py` (the floor:
tdwii's own TLS context, one thread per connection, fixed answers, TCP_QUICKACK after the
handshake and on an incomplete PDU as tdwii serve sets it), and DCMTK `storescp +tls` with
TCP_NODELAY=0 (its default) and =1 (its best; the issue's yardstick). Nagle-on rates
against DCMTK with TCP_NODELAY=0 are slow (a round trip waits for a delayed ACK both
ways): a tenth of `-n`, one client. `echoscu` writes a P-DATA-TF's header and its PDV in
two writes, so a server that leaves that ACK delayed (storescp, whatever its TCP_NODELAY)
costs it 40 ms per C-ECHO.

    python bench/serve_assoc.py [-n 300] [--warmup 20] [--clients 1 4] [--rounds 3]
                                [--client tuned nagle pynetdicom dcmtk] [--echoscu-runs 15]
                                [--skip-dcmtk] [--baseline SRC] [--secured]

Prints, per client kind and number of clients, p50/p90/p99 latency, the rate and server
CPU per association of each server; the ratios tdwii's CPU to the floor's and tdwii's rate
to DCMTK's best; echoscu's whole-process time per server; and the targets of issue 21
(Nagle-on clients against tdwii at least DCMTK with TCP_NODELAY=1 sequentially and 1.5x
with 4 clients; tdwii's CPU per association within 1.15x of the floor with the CRL check
on; echoscu against tdwii within 1.1x of echoscu against storescp). `--secured` adds
`tdwii serve --mtls --authorize --audit FILE --audit syslog+tls://...` (the load
generators' AE titles bound to their certificate; audit to a file and to an rsyslog
repository over mutual TLS, started here as in the tests) and its rate against the plain
one. The rounds interleave the servers (their order reversed every other round) so that a
noisy neighbour on this machine hits them all alike.
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import echo_pdus as dul

KINDS = {
    "tuned": "",  # the original figures: their lines say nothing of the client
    "nagle": "raw socket+ssl, Nagle on (as they come)",
    "pynetdicom": "pynetdicom SCU, its defaults (Nagle on)",
    "dcmtk": "DCMTK echoscu +tls, its defaults (Nagle on), whole process",
}
IN_PROCESS = ("tuned", "nagle", "pynetdicom")
NAGLE_ON = ("nagle", "pynetdicom")

TDWII = "tdwii serve --mtls"
NO_CRL = "tdwii serve --mtls --no-crl"
SECURED = "tdwii serve --mtls --authorize --audit"
BASELINE = "baseline tdwii serve --mtls"
FLOOR = "bare Python TLS server (floor)"
DCMTK_BEST = "DCMTK storescp +tls (TCP_NODELAY=1)"


def one_association(ctx: ssl.SSLContext, port: int, nodelay: bool) -> float:
    """Connect, TLS, associate, C-ECHO, release with the raw client; seconds taken."""
    start = time.perf_counter()
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    if nodelay:
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(RQ)
        kind, _ = dul.read_pdu(sock)
        if kind != dul.A_ASSOCIATE_AC:
            raise RuntimeError(f"association not accepted (PDU type 0x{kind:02X})")
        sock.sendall(dul.ECHO_RQ)
        if dul.echo_status(sock) != 0:
            raise RuntimeError("C-ECHO failed")
        sock.sendall(dul.RELEASE_RQ)
        kind, _ = dul.read_pdu(sock)
        if kind != dul.A_RELEASE_RP:
            raise RuntimeError(f"release not confirmed (PDU type 0x{kind:02X})")
    return time.perf_counter() - start


RQ = dul.associate_rq("BENCH", "ANY-SCP")


def pynetdicom_associations(ctx: ssl.SSLContext, port: int, n: int) -> list[float]:
    """`n` associations with pynetdicom's SCU as it comes (its defaults); seconds each."""
    from pynetdicom import AE

    ae = AE(ae_title="BENCH")
    ae.add_requested_context(dul.VERIFICATION)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        assoc = ae.associate("127.0.0.1", port, ae_title="ANY-SCP", tls_args=(ctx, "localhost"))
        if not assoc.is_established:
            raise RuntimeError("pynetdicom: association not established")
        status = assoc.send_c_echo()
        if not status or status.Status != 0:
            assoc.abort()
            raise RuntimeError(f"pynetdicom: C-ECHO failed ({status})")
        assoc.release()
        times.append(time.perf_counter() - start)
    return times


def client_context(certs: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs / "rootCA" / "rootCA.pem")
    node = certs / "clients" / "workitemcreator" / "workitemcreator"
    ctx.load_cert_chain(f"{node}.pem", f"{node}.key")
    return ctx


def _clients_run(args: tuple[Path, int, int, str]) -> list[float]:
    """One load-generating process: `n` associations in a row (for the pool)."""
    certs, port, n, kind = args
    ctx = client_context(certs)
    if kind == "pynetdicom":
        return pynetdicom_associations(ctx, port, n)
    return [one_association(ctx, port, kind == "tuned") for _ in range(n)]


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    certs: Path, port: int, n: int, warmup: int, clients: int, pid: int, kind: str
) -> dict[str, float]:
    """`n` associations from `clients` processes at once; latency, rate, server CPU each."""
    per = max(1, n // clients)
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        pool.map(_clients_run, [(certs, port, max(1, warmup // clients), kind)] * clients)
        cpu0 = cpu_seconds(pid)
        begin = time.perf_counter()
        runs = pool.map(_clients_run, [(certs, port, per, kind)] * clients)
        total = time.perf_counter() - begin
        cpu = cpu_seconds(pid) - cpu0
    times = sorted(t for run in runs for t in run)
    return summary(times, total, cpu)


def echoscu_command(echoscu: str, certs: Path, port: int) -> list[str]:
    node = certs / "clients" / "workitemcreator" / "workitemcreator"
    return [echoscu, "+tls", f"{node}.key", f"{node}.pem",
            "+cf", str(certs / "rootCA" / "rootCA.pem"), "localhost", str(port)]  # fmt: skip


def echoscu_runs(cmd: list[str], pid: int, count: int) -> dict[str, float]:
    """`count` whole `echoscu` processes in a row with DCMTK's defaults (TCP_NODELAY not in
    their environment): the wall time of each, the server's CPU over them all."""
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}
    times = []
    cpu0 = cpu_seconds(pid)
    for _ in range(count):
        start = time.perf_counter()
        done = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise RuntimeError(f"echoscu exited {done.returncode}: {done.stderr[-500:]!r}")
    cpu = cpu_seconds(pid) - cpu0
    return summary(times, sum(times), cpu)


def summary(times: list[float], total: float, cpu: float) -> dict[str, float]:
    """Latency percentiles (ms), rate and server CPU (ms) per association."""
    times = sorted(times)
    count = len(times)
    return {
        "p50": statistics.median(times) * 1000,
        "p90": times[int(0.9 * (count - 1))] * 1000,
        "p99": times[int(0.99 * (count - 1))] * 1000,
        "min": times[0] * 1000,
        "rate": count / total,
        "cpu": cpu / count * 1000,
        "total": total,
        "cpu_total": cpu,
        "times": times,  # type: ignore[dict-item]
    }


def pooled(parts: list[dict[str, float]]) -> dict[str, float]:
    """One summary of several rounds of the same server."""
    times = [t for part in parts for t in part["times"]]  # type: ignore[attr-defined]
    return summary(times, sum(p["total"] for p in parts), sum(p["cpu_total"] for p in parts))


# -- servers ----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            time.sleep(0.2)  # that probe is a failed handshake; let the server log it
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def dcmtk_tool(name: str) -> str | None:
    """DCMTK's `name`, not pynetdicom's script of the same name (nor a pyenv shim)."""
    for folder in ["/usr/bin", "/usr/local/bin", *os.environ.get("PATH", "").split(os.pathsep)]:
        path = Path(folder) / name
        if path.is_file() and not path.read_bytes()[:64].startswith(b"#!"):
            return str(path)
    return None


def row(name: str, r: dict[str, float]) -> str:
    return (
        f"{name:<38} p50 {r['p50']:6.2f} ms  p90 {r['p90']:6.2f} ms  "
        f"p99 {r['p99']:6.2f} ms  {r['rate']:7.1f} assoc/s  server CPU {r['cpu']:5.2f} ms"
    )


def echoscu_row(name: str, r: dict[str, float]) -> str:
    count = len(r["times"])  # type: ignore[arg-type]
    return (
        f"{name:<38} median {r['p50']:6.1f} ms  min {r['min']:6.1f} ms  p90 {r['p90']:6.1f} ms"
        f"  ({count} runs)  server CPU {r['cpu']:5.2f} ms"
    )


def target(value: float, goal: float, at_least: bool) -> str:
    met = value >= goal if at_least else value <= goal
    word = "met" if met else "NOT met"
    return f"{value:.2f}x (target {'>=' if at_least else '<='} {goal}x: {word})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="associations measured per server")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per server")
    parser.add_argument(
        "--client",
        nargs="+",
        choices=list(KINDS),
        default=list(KINDS),
        metavar="KIND",
        help="client kinds: tuned nagle pynetdicom dcmtk (all)",
    )
    parser.add_argument(
        "--echoscu-runs", type=int, default=15, help="echoscu processes per server (15)"
    )
    parser.add_argument("--skip-dcmtk", action="store_true", help="no storescp, no echoscu")
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="SRC",
        help="also measure the tdwii in this src folder (e.g. a worktree of an older commit)",
    )
    parser.add_argument(
        "--secured",
        action="store_true",
        help="also measure tdwii serve with --authorize and --audit (a file and rsyslog)",
    )
    args = parser.parse_args()
    kinds = [k for k in KINDS if k in args.client]

    storescp = echoscu = None
    if not args.skip_dcmtk:
        storescp, echoscu = dcmtk_tool("storescp"), dcmtk_tool("echoscu")
        if storescp is None:
            print("DCMTK storescp not found (apt-get install dcmtk); skipped", file=sys.stderr)
    if "dcmtk" in kinds and echoscu is None:
        if not args.skip_dcmtk:
            print("DCMTK echoscu not found (apt-get install dcmtk); skipped", file=sys.stderr)
        kinds.remove("dcmtk")
    if "pynetdicom" in kinds:
        try:
            import pynetdicom  # imported here, so that the forked clients have it loaded

            logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
            KINDS["pynetdicom"] = (
                f"pynetdicom {pynetdicom.__version__} SCU, its defaults (Nagle on)"
            )
        except ImportError:
            print("pynetdicom not installed; its client skipped", file=sys.stderr)
            kinds.remove("pynetdicom")

    here = Path(__file__).resolve().parent
    work = Path(tempfile.mkdtemp(prefix="tdwii-bench-"))
    try:
        subprocess.run(
            [sys.executable, "-m", "tdwii_cli", "pki", "init", "-q"],
            cwd=work,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        certs = work / "certs"
        servers: dict[str, tuple[list[str], dict[str, str]]] = {}
        port_token = "{port}"
        db = str(work / "bench.sqlite")
        tdwii = [sys.executable, "-m", "tdwii_cli", "serve", "--mtls", "--port", port_token,
                 "-ba", "127.0.0.1", "--db", db, "-q"]  # fmt: skip
        servers[TDWII] = (tdwii, {})  # checks the CRL of `tdwii pki init`
        nocrl_db = str(work / "nocrl.sqlite")
        nocrl = [part if part != db else nocrl_db for part in tdwii] + ["--no-crl"]
        servers[NO_CRL] = (nocrl, {})
        repo = None
        if args.secured:
            sys.path.insert(0, str(here.parent / "tests"))
            from auditrepo import Repository

            repo = Repository(work / "repository", certs)
            repo.start()
            bound = ["CN=workitemcreator"]
            entries = [  # the raw and pynetdicom clients' title, and echoscu's default
                {"AETitle": title, "Certificates": bound, "Roles": []}
                for title in ("BENCH", "ECHOSCU")
            ]
            (work / "ae.json").write_text(json.dumps(entries))
            secured_db = str(work / "secured.sqlite")
            secured = [part if part != db else secured_db for part in tdwii]
            secured += ["--ae-config", str(work / "ae.json"), "--authorize"]
            secured += ["--audit", str(work / "audit.log"), "--audit", repo.tls_url]
            servers[SECURED] = (secured, {})
        if args.baseline:
            base_db = str(work / "baseline.sqlite")
            base_cmd = [part if part != db else base_db for part in tdwii]
            servers[BASELINE] = (base_cmd, {"PYTHONPATH": str(args.baseline.resolve())})
        servers[FLOOR] = ([sys.executable, str(here / "bare_tls_server.py"), port_token], {})
        if storescp:
            server = certs / "servers" / "worklistmanager" / "worklistmanager"
            for nodelay in ("0", "1"):
                cmd = [storescp, "+tls", f"{server}.key", f"{server}.pem"]
                cmd += ["+cf", str(certs / "rootCA" / "rootCA.pem"), port_token]
                servers[f"DCMTK storescp +tls (TCP_NODELAY={nodelay})"] = (
                    cmd,
                    {"TCP_NODELAY": nodelay},
                )

        # every server runs at once (idle, they cost nothing); the rounds interleave them
        procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        runs: dict[tuple[str, str, int], list[dict[str, float]]] = {}
        try:
            for name, (template, env_extra) in servers.items():
                port = free_port()
                cmd = [str(port) if part == port_token else part for part in template]
                env = dict(os.environ, **env_extra)
                proc = subprocess.Popen(cmd, cwd=work, env=env, stderr=subprocess.DEVNULL)
                procs[name] = (proc, port)
                wait_port(port, proc)
            if "dcmtk" in kinds:
                assert echoscu is not None
                for _proc, port in procs.values():  # warm the page cache, once each
                    subprocess.run(echoscu_command(echoscu, certs, port), capture_output=True)
            for number in range(args.rounds):
                order = list(procs.items())
                if number % 2:
                    order.reverse()
                for clients in args.clients:
                    for kind in kinds:
                        if kind not in IN_PROCESS:
                            continue
                        for name, (proc, port) in order:
                            slow = "NODELAY=0" in name
                            if slow and clients > 1:
                                continue  # 90 ms a round trip: nothing to learn from more
                            n = max(clients, args.n // args.rounds // (10 if slow else 1))
                            runs.setdefault((name, kind, clients), []).append(
                                measure(certs, port, n, args.warmup, clients, proc.pid, kind)
                            )
                if "dcmtk" in kinds:
                    assert echoscu is not None
                    share = args.echoscu_runs // args.rounds + (
                        number < args.echoscu_runs % args.rounds
                    )
                    for name, (proc, port) in order:
                        cmd = echoscu_command(echoscu, certs, port)
                        runs.setdefault((name, "dcmtk", 1), []).append(
                            echoscu_runs(cmd, proc.pid, max(1, share))
                        )
        finally:
            for proc, _port in procs.values():
                stop(proc)
            if repo is not None:
                repo.stop()
        results = {key: pooled(parts) for key, parts in runs.items()}
        report(results, kinds, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def report(
    results: dict[tuple[str, str, int], dict[str, float]],
    kinds: list[str],
    args: argparse.Namespace,
) -> None:
    for kind in kinds:
        if kind not in IN_PROCESS:
            continue
        for clients in args.clients:
            said = f", client: {KINDS[kind]}" if KINDS[kind] else ""
            print(
                f"mTLS associations (associate, C-ECHO, release), {clients} client(s), "
                f"n={args.n}{said}"
            )
            for (name, k, c), r in results.items():
                if k == kind and c == clients:
                    print("  " + row(name, r))
            ours = results[(TDWII, kind, clients)]
            floor = results[(FLOOR, kind, clients)]
            dcmtk = [
                r
                for (name, k, c), r in results.items()
                if k == kind and c == clients and "DCMTK" in name
            ]
            line = f"  tdwii CPU per association / floor: {ours['cpu'] / floor['cpu']:.2f}x"
            if (SECURED, kind, clients) in results:
                guarded = results[(SECURED, kind, clients)]
                line += (
                    f"; --authorize --audit: rate {guarded['rate'] / ours['rate']:.3f}x, "
                    f"CPU {guarded['cpu'] / ours['cpu']:.3f}x the plain one"
                )
            if dcmtk:
                best = max(dcmtk, key=lambda r: r["rate"])
                line += f"; tdwii rate / best DCMTK: {ours['rate'] / best['rate']:.2f}x"
            print(line)
    if "dcmtk" in kinds:
        print(
            "DCMTK echoscu +tls with its defaults (Nagle on), whole process, one at a time "
            "(server CPU from 10 ms clock ticks over few runs: rough)"
        )
        for (name, k, _c), r in results.items():
            if k == "dcmtk":
                print("  " + echoscu_row(name, r))

    # -- the targets of issue 21 -----------------------------------------------------------
    print("targets (issue 21), tdwii serve --mtls with the CRL check:")
    base = {c: results.get((TDWII, "tuned", c)) for c in args.clients}
    for kind in kinds:
        if kind not in NAGLE_ON:
            continue
        parts = []
        for clients in args.clients:
            ours, dcmtk = results[(TDWII, kind, clients)], results.get((DCMTK_BEST, kind, clients))
            if dcmtk is None:
                continue
            goal = 1.0 if clients == 1 else 1.5
            parts.append(
                f"{clients} client(s) {ours['rate']:.1f}/{dcmtk['rate']:.1f} assoc/s = "
                f"{target(ours['rate'] / dcmtk['rate'], goal, True)}"
            )
        if parts:
            print(
                f"  {kind} client, rate against tdwii / against {DCMTK_BEST}: " + "; ".join(parts)
            )
        gaps = []
        for clients in args.clients:
            tuned = base[clients]
            if tuned is not None:
                ours = results[(TDWII, kind, clients)]
                gaps.append(f"{clients} client(s) {ours['rate'] / tuned['rate']:.2f}x")
        if gaps:
            print(f"  {kind} client against tdwii, rate / the tuned client's: " + ", ".join(gaps))
    parts = []
    for kind in IN_PROCESS:  # (echoscu's few processes: too few clock ticks to compare)
        for clients in args.clients:
            if (TDWII, kind, clients) in results and (FLOOR, kind, clients) in results:
                ratio = (
                    results[(TDWII, kind, clients)]["cpu"] / results[(FLOOR, kind, clients)]["cpu"]
                )
                parts.append(f"{kind} x{clients} {ratio:.2f}x")
    if parts:
        print("  server CPU per association / the floor's (target <= 1.15x): " + ", ".join(parts))
    nocrl = [
        f"{kind} x{c} {r['cpu'] / results[(FLOOR, kind, c)]['cpu']:.2f}x"
        for (name, kind, c), r in results.items()
        if name == NO_CRL and kind in IN_PROCESS and (FLOOR, kind, c) in results
    ]
    if nocrl:
        print("    the same with --no-crl: " + ", ".join(nocrl))
    if (TDWII, "dcmtk", 1) in results and (DCMTK_BEST, "dcmtk", 1) in results:
        ours, dcmtk = results[(TDWII, "dcmtk", 1)], results[(DCMTK_BEST, "dcmtk", 1)]
        ratio = target(ours["p50"] / dcmtk["p50"], 1.1, False)
        print(
            f"  echoscu whole process (median) against tdwii / against {DCMTK_BEST}: "
            f"{ours['p50']:.1f}/{dcmtk['p50']:.1f} ms = {ratio}"
        )
        if (FLOOR, "dcmtk", 1) in results:
            floor = results[(FLOOR, "dcmtk", 1)]
            print(
                f"    against tdwii / against the floor: {ours['p50']:.1f}/{floor['p50']:.1f} ms"
                f" = {ours['p50'] / floor['p50']:.2f}x"
            )


if __name__ == "__main__":
    sys.exit(main())
