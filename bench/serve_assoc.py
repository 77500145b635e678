#!/usr/bin/env python3
"""Benchmark: sequential mTLS associations (associate, C-ECHO, release) against
`tdwii serve --mtls` and DCMTK `storescp +tls`, measured the same way in the same run.

The load generator is a small DICOM client written directly on `socket` + `ssl`
(the PDUs are encoded here by hand: A-ASSOCIATE-RQ, P-DATA-TF with a C-ECHO-RQ,
A-RELEASE-RQ), with TCP_NODELAY, so that it adds well under a millisecond; a
pynetdicom client would add its own tens of milliseconds. Every association is
a new TCP connection and a full TLS handshake (no session resumption) for
every server.

DCMTK leaves Nagle's algorithm on unless its environment has TCP_NODELAY=1, so
storescp is measured both ways and its best is quoted.

It also runs `bench/bare_tls_server.py`, the floor: tdwii's own TLS context, one
thread per connection, fixed answers. Each server is measured with one client and
with four client processes at once; the server's CPU time (user + system, from
/proc) is divided by the associations it served.

    python bench/serve_assoc.py [-n 300] [--warmup 20] [--clients 1 4] [--rounds 3] [--skip-dcmtk]
                                [--baseline SRC] [--secured]

Prints p50/p90/p99 latency, the rate and server CPU per association for each
server, and the ratios: tdwii's CPU to the floor's, tdwii's rate to DCMTK's best.
`--secured` adds `tdwii serve --mtls --authorize --audit FILE --audit syslog+tls://...`
(the load generator's AE title bound to its certificate; audit to a file and to an rsyslog
repository over mutual TLS, started here as in the tests) and its rate against the plain one.
"""

from __future__ import annotations

import argparse
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

# the same hand-written upper layer `tdwii echo` uses
from tdwii_cli.dicom.uids import IMPLICIT_VR_LE, VERIFICATION
from tdwii_cli.net import dimse, pdu
from tdwii_cli.net.channel import PduStream, read_pdu


def one_association(ctx: ssl.SSLContext, port: int, rq: bytes, echo: bytes) -> float:
    """Connect, TLS, associate, C-ECHO, release; seconds taken."""
    start = time.perf_counter()
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(rq)
        kind, _ = read_pdu(sock)
        if kind != 0x02:
            raise RuntimeError(f"association not accepted (PDU type 0x{kind:02X})")
        sock.sendall(echo)
        if PduStream(sock).read_message().command.status != 0:
            raise RuntimeError("C-ECHO failed")
        sock.sendall(pdu.RELEASE_RQ)
        kind, _ = read_pdu(sock)
        if kind != 0x06:
            raise RuntimeError(f"release not confirmed (PDU type 0x{kind:02X})")
    return time.perf_counter() - start


def client_context(certs: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs / "rootCA" / "rootCA.pem")
    node = certs / "clients" / "workitemcreator" / "workitemcreator"
    ctx.load_cert_chain(f"{node}.pem", f"{node}.key")
    return ctx


def _clients_run(args: tuple[Path, int, int]) -> list[float]:
    """One load-generating process: `n` associations in a row (for the pool)."""
    certs, port, n = args
    ctx = client_context(certs)
    rq, echo = _pdus()
    return [one_association(ctx, port, rq, echo) for _ in range(n)]


def _pdus() -> tuple[bytes, bytes]:
    contexts = [pdu.PresentationContext(1, VERIFICATION, (IMPLICIT_VR_LE,))]
    rq = pdu.associate_rq("BENCH", "ANY-SCP", contexts)
    echo = dimse.encode_message(
        1, dimse.Command(dimse.C_ECHO_RQ, message_id=1, sop_class=VERIFICATION), None, 0
    )
    return rq, echo


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    certs: Path, port: int, n: int, warmup: int, clients: int, pid: int
) -> dict[str, float]:
    """`n` associations from `clients` processes at once; latency, rate, server CPU each."""
    per = max(1, n // clients)
    with multiprocessing.get_context("fork").Pool(clients) as pool:
        pool.map(_clients_run, [(certs, port, max(1, warmup // clients))] * clients)
        cpu0 = cpu_seconds(pid)
        begin = time.perf_counter()
        runs = pool.map(_clients_run, [(certs, port, per)] * clients)
        total = time.perf_counter() - begin
        cpu = cpu_seconds(pid) - cpu0
    times = sorted(t for run in runs for t in run)
    return summary(times, total, cpu)


def summary(times: list[float], total: float, cpu: float) -> dict[str, float]:
    """Latency percentiles (ms), rate and server CPU (ms) per association."""
    times = sorted(times)
    count = len(times)
    return {
        "p50": statistics.median(times) * 1000,
        "p90": times[int(0.9 * (count - 1))] * 1000,
        "p99": times[int(0.99 * (count - 1))] * 1000,
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


def dcmtk_storescp() -> str | None:
    for folder in ["/usr/bin", "/usr/local/bin", *os.environ.get("PATH", "").split(os.pathsep)]:
        path = Path(folder) / "storescp"
        if path.is_file() and not path.read_bytes()[:64].startswith(b"#!"):
            return str(path)
    return None


SECURED = "tdwii serve --mtls --authorize --audit"


def row(name: str, r: dict[str, float]) -> str:
    return (
        f"{name:<38} p50 {r['p50']:6.2f} ms  p90 {r['p90']:6.2f} ms  "
        f"p99 {r['p99']:6.2f} ms  {r['rate']:7.1f} assoc/s  server CPU {r['cpu']:5.2f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="associations measured per server")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per server")
    parser.add_argument("--skip-dcmtk", action="store_true")
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
        servers["tdwii serve --mtls"] = (tdwii, {})  # checks the CRL of `tdwii pki init`
        nocrl_db = str(work / "nocrl.sqlite")
        nocrl = [part if part != db else nocrl_db for part in tdwii] + ["--no-crl"]
        servers["tdwii serve --mtls --no-crl"] = (nocrl, {})
        repo = None
        if args.secured:
            sys.path.insert(0, str(here.parent / "tests"))
            from auditrepo import Repository

            repo = Repository(work / "repository", certs)
            repo.start()
            (work / "ae.json").write_text(
                '[{"AETitle": "BENCH", "Certificates": ["CN=workitemcreator"], "Roles": []}]'
            )
            secured_db = str(work / "secured.sqlite")
            secured = [part if part != db else secured_db for part in tdwii]
            secured += ["--ae-config", str(work / "ae.json"), "--authorize"]
            secured += ["--audit", str(work / "audit.log"), "--audit", repo.tls_url]
            servers[SECURED] = (secured, {})
        if args.baseline:
            base_db = str(work / "baseline.sqlite")
            base_cmd = [part if part != db else base_db for part in tdwii]
            servers["baseline tdwii serve --mtls"] = (
                base_cmd,
                {"PYTHONPATH": str(args.baseline.resolve())},
            )
        servers["bare Python TLS server (floor)"] = (
            [sys.executable, str(here / "bare_tls_server.py"), port_token],
            {},
        )
        storescp = None if args.skip_dcmtk else dcmtk_storescp()
        if storescp:
            server = certs / "servers" / "worklistmanager" / "worklistmanager"
            for nodelay in ("0", "1"):
                cmd = [storescp, "+tls", f"{server}.key", f"{server}.pem"]
                cmd += ["+cf", str(certs / "rootCA" / "rootCA.pem"), port_token]
                servers[f"DCMTK storescp +tls (TCP_NODELAY={nodelay})"] = (
                    cmd,
                    {"TCP_NODELAY": nodelay},
                )
        elif not args.skip_dcmtk:
            print("DCMTK storescp not found (apt-get install dcmtk); skipped", file=sys.stderr)

        # every server runs at once (idle, they cost nothing); the rounds interleave them
        # so that a noisy neighbour on this machine hits them all alike
        procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
        runs: dict[tuple[str, int], list[dict[str, float]]] = {}
        try:
            for name, (template, env_extra) in servers.items():
                port = free_port()
                cmd = [str(port) if part == port_token else part for part in template]
                env = dict(os.environ, **env_extra)
                proc = subprocess.Popen(cmd, cwd=work, env=env, stderr=subprocess.DEVNULL)
                procs[name] = (proc, port)
                wait_port(port, proc)
            for _ in range(args.rounds):
                for clients in args.clients:
                    for name, (proc, port) in procs.items():
                        slow = "NODELAY=0" in name
                        if slow and clients > 1:
                            continue  # 90 ms a round trip: nothing to learn from more clients
                        n = max(clients, args.n // args.rounds // (10 if slow else 1))
                        runs.setdefault((name, clients), []).append(
                            measure(certs, port, n, args.warmup, clients, proc.pid)
                        )
        finally:
            for proc, _port in procs.values():
                stop(proc)
            if repo is not None:
                repo.stop()
        results = {key: pooled(parts) for key, parts in runs.items()}

        for clients in args.clients:
            print(
                f"mTLS associations (associate, C-ECHO, release), {clients} client(s), n={args.n}"
            )
            for (name, c), r in results.items():
                if c == clients:
                    print("  " + row(name, r))
            ours = results[("tdwii serve --mtls", clients)]
            floor = results[("bare Python TLS server (floor)", clients)]
            dcmtk = [r for (name, c), r in results.items() if c == clients and "DCMTK" in name]
            line = f"  tdwii CPU per association / floor: {ours['cpu'] / floor['cpu']:.2f}x"
            if (SECURED, clients) in results:
                guarded = results[(SECURED, clients)]
                line += (
                    f"; --authorize --audit: rate {guarded['rate'] / ours['rate']:.3f}x, "
                    f"CPU {guarded['cpu'] / ours['cpu']:.3f}x the plain one"
                )
            if dcmtk:
                best = max(dcmtk, key=lambda r: r["rate"])
                line += f"; tdwii rate / best DCMTK: {ours['rate'] / best['rate']:.2f}x"
            print(line)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
