#!/usr/bin/env python3
"""Benchmark: create N workitems from a folder over one mTLS association.

    python bench/create_many.py [-n 1000] [--peer both|tdwii|pynetdicom] [--runs 1] [--keep DIR]
                                [--client tdwii pynetdicom [pynetdicom-nodelay]] [--scu-n 200]
                                [--baseline SRC] [--secured]

Makes a fresh PKI (`tdwii pki init`) and N workitem files in a temp folder,
starts the peer on a loopback ephemeral port, then times the whole
`tdwii create-workitem --mtls HOST PORT FOLDER` process (start-up, reading and
checking the files, TLS, N N-CREATEs, release) and prints the wall time, the rate
and the server's CPU time (from /proc) per N-CREATE. With `--peer both` (the
default) both peers are measured, the runs alternating between them, each run against
a freshly started peer with an empty database.

Peers: `tdwii` (default) is `tdwii serve --mtls` with its durable SQLite store;
`pynetdicom` is a minimal in-memory UPS Push SCP (TCP_NODELAY, the same
N-CREATE checks, pynetdicom's own 1 ms polling) for comparison. `--secured` adds
`tdwii serve --mtls --authorize --audit FILE --audit syslog+tls://...` (the client's AE
title bound to its certificate with role create; every N-CREATE audited to a file and to
an rsyslog repository over mutual TLS, started here as in the tests) to the same
interleaved runs, and prints its rate against the plain `tdwii serve`.

Clients (`--client`, by default `tdwii pynetdicom`): `tdwii create-workitem` (ours:
TCP_NODELAY, the file's bytes sent as they are) and a client as it comes: a pynetdicom
SCU with its defaults (Nagle on; calling AE title TDWII as ours), which reads the first `--scu-n`
files with pydicom and sends an N-CREATE for each over one association. pynetdicom sends
a request's command set and its data set in two P-DATA-TF PDUs, so with Nagle on the
second waits for the peer's ACK of the first: a peer that delays that ACK costs it the
delayed-ACK timer per request. It runs against every peer, a freshly started peer each
time, interleaved with the runs of `create-workitem`; its whole process and its
association (associate to release, in-process) are timed, with the p50 of one N-CREATE.
`pynetdicom-nodelay` adds the same SCU with TCP_NODELAY set on its socket: what pynetdicom
itself costs, without the wait.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from tdwii_cli.client.dicomfiles import write_part10
from tdwii_cli.pki.authority import init_pki
from tdwii_cli.ups.workitem import build_workitem

TDWII = [sys.executable, "-m", "tdwii_cli"]

MINIMAL_SCP = textwrap.dedent(
    """
    import socket, ssl, sys
    from pynetdicom import AE, evt
    from tdwii_cli.ups.ncreate import check_ncreate, complete_type2
    certs, port = sys.argv[1], int(sys.argv[2])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(f"{certs}/rootCA/rootCA.pem")
    node = f"{certs}/servers/worklistmanager/worklistmanager"
    ctx.load_cert_chain(node + ".pem", node + ".key")
    seen = set()
    def create(event):
        ds = event.attribute_list
        problems = check_ncreate(ds)
        if problems:
            return problems[0].status, None
        uid = event.request.AffectedSOPInstanceUID
        if uid in seen:
            return 0x0111, None
        seen.add(uid)
        return 0x0000, complete_type2(ds)
    def nodelay(event):
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    ae = AE("UPSSCP")
    ae.add_supported_context("1.2.840.10008.5.1.4.34.6.1",
                             ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    ae.start_server(("127.0.0.1", port), ssl_context=ctx,
                    evt_handlers=[(evt.EVT_N_CREATE, create), (evt.EVT_CONN_OPEN, nodelay)])
    """
)


MINIMAL_SCU = textwrap.dedent(
    """
    import json, ssl, sys, time
    from pathlib import Path
    from pydicom import dcmread
    import socket
    from pynetdicom import AE, evt
    certs, port, folder, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    nodelay = sys.argv[5] == "1"
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(f"{certs}/rootCA/rootCA.pem")
    node = f"{certs}/clients/workitemcreator/workitemcreator"
    ctx.load_cert_chain(node + ".pem", node + ".key")
    UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
    ae = AE(ae_title="TDWII")
    ae.add_requested_context(UPS_PUSH, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    files = sorted(Path(folder).glob("*.dcm"))[:count]
    started = time.perf_counter()
    def tuned(event):
        event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    handlers = [(evt.EVT_CONN_OPEN, tuned)] if nodelay else []
    assoc = ae.associate("127.0.0.1", port, ae_title="ANY-SCP", tls_args=(ctx, "localhost"),
                         evt_handlers=handlers)
    if not assoc.is_established:
        sys.exit("association not established")
    created, each = 0, []
    for path in files:
        ds = dcmread(path)
        sent = time.perf_counter()
        status, _ = assoc.send_n_create(ds, UPS_PUSH, ds.SOPInstanceUID)
        each.append(time.perf_counter() - sent)
        if status and status.Status == 0:
            created += 1
    assoc.release()
    seconds = time.perf_counter() - started
    each.sort()
    print(json.dumps({"created": created, "associations": 1, "seconds": seconds,
                      "p50": each[len(each) // 2] if each else 0.0}))
    """
)


SCU_KINDS = ["tdwii", "pynetdicom", "pynetdicom-nodelay"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the peer exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"the peer did not listen on {port}")


def make_items(folder: Path, n: int) -> None:
    folder.mkdir(parents=True)
    for i in range(n):
        ds = build_workitem(
            patient_id=f"BENCH-{i:05}",
            patient_name=f"Bench^Patient{i}",
            label=f"Fx {i % 30 + 1}",
            station=("TrueBeam1", "Halcyon2", "VersaHD3")[i % 3],
            plan_uid=f"1.2.826.0.1.3680043.8.498.4242.{i + 1}",
            priority=("LOW", "MEDIUM", "HIGH")[i % 3],
        )
        write_part10(ds, folder / f"ups_{i:05}.dcm")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_peer(
    name: str, work: Path, certs: Path, baseline: Path | None = None, repo: str = ""
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = dict(os.environ)
    if name == "baseline" and baseline is not None:
        env["PYTHONPATH"] = str(baseline.resolve())
    if name in ("tdwii", "baseline", "secured"):
        cmd = [*TDWII, "serve", "--mtls", "--port", str(port), "-ba", "127.0.0.1",
               "--db", str(work / f"bench-{port}.sqlite"), "-q"]  # fmt: skip
        if name == "secured":
            cmd += ["--ae-config", str(secured_ae_config(work)), "--authorize",
                    "--audit", str(work / f"audit-{port}.log"), "--audit", repo]  # fmt: skip
    else:
        cmd = [sys.executable, "-c", MINIMAL_SCP, str(certs), str(port)]
    peer = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, env=env)
    wait_port(port, peer)
    return peer, port


def secured_ae_config(work: Path) -> Path:
    """The AE configuration of the secured peer: the client's AE title may create."""
    path = work / "ae.json"
    if not path.exists():
        entry = {"AETitle": "TDWII", "Certificates": ["CN=workitemcreator"], "Roles": ["create"]}
        path.write_text(json.dumps([entry]))
    return path


def repository(work: Path, certs: Path):  # type: ignore[no-untyped-def]
    """rsyslog over mutual TLS on loopback, as the tests start it (tests/auditrepo.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from auditrepo import Repository

    return Repository(work / "repository", certs)


def one_run(
    work: Path, items: Path, port: int, client_kind: str = "tdwii", count: int = 0
) -> tuple[float, dict]:
    if client_kind.startswith("pynetdicom"):
        certs = work / "certs"
        nodelay = "1" if client_kind == "pynetdicom-nodelay" else "0"
        client = [sys.executable, "-c", MINIMAL_SCU, str(certs), str(port), str(items),
                  str(count), nodelay]  # fmt: skip
    else:
        client = [*TDWII, "create-workitem", "--mtls", "127.0.0.1", str(port),
                  str(items), "--json", "-q"]  # fmt: skip
    started = time.perf_counter()
    result = subprocess.run(client, cwd=work, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        print(result.stderr[-2000:], file=sys.stderr)
        raise SystemExit(f"{client_kind} client exited {result.returncode}")
    return wall, json.loads(result.stdout)


def report_scu(
    scu: dict[tuple[str, str], list[dict]], inner: dict[str, list[float]], scu_n: int, n: int
) -> str:
    """The pynetdicom SCU's medians per peer, against tdwii serve's, and against ours."""
    lines = []
    for (kind, name), docs in scu.items():
        rate = statistics.median(scu_n / d["seconds"] for d in docs)
        one = statistics.median(d["p50"] for d in docs) * 1000
        cpu = statistics.median(d["cpu"] for d in docs) / scu_n * 1000
        said = "as it comes" if kind == "pynetdicom" else "TCP_NODELAY"
        line = (
            f"pynetdicom SCU ({said}) against {name}: {rate:.0f}/s in-process, one "
            f"N-CREATE p50 {one:.1f} ms, server CPU {cpu:.2f} ms (median of {len(docs)} runs)"
        )
        if inner.get(name):
            ours = statistics.median(n / s for s in inner[name])
            line += f"; tdwii create-workitem {ours:.0f}/s in-process ({rate / ours:.2f}x)"
        lines.append(line)
    for kind in ("pynetdicom", "pynetdicom-nodelay"):
        if (kind, "tdwii") in scu and (kind, "pynetdicom") in scu:
            pairs = sorted(
                p["seconds"] / t["seconds"]
                for t, p in zip(scu[(kind, "tdwii")], scu[(kind, "pynetdicom")], strict=True)
            )
            mid = statistics.median(pairs)
            lines.append(
                f"{kind} SCU: tdwii serve / minimal pynetdicom SCP: {mid:.2f}x the rate "
                f"(median of {len(pairs)} interleaved runs, {pairs[0]:.2f}-{pairs[-1]:.2f}x)"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="number of workitems (1000)")
    parser.add_argument("--peer", choices=["tdwii", "pynetdicom", "both"], default="both")
    parser.add_argument("--runs", type=int, default=1, help="repeat (a fresh peer each run)")
    parser.add_argument("--keep", type=Path, help="work in DIR and keep it")
    parser.add_argument(
        "--client",
        nargs="+",
        choices=SCU_KINDS,
        default=["tdwii", "pynetdicom"],
        help="tdwii create-workitem, a pynetdicom SCU as it comes (Nagle on), the same SCU "
        "with TCP_NODELAY (tdwii pynetdicom)",
    )
    parser.add_argument(
        "--scu-n", type=int, default=200, help="workitems the pynetdicom SCU creates (200)"
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        metavar="SRC",
        help="also run the tdwii serve in this src folder (e.g. a worktree of an older commit)",
    )
    parser.add_argument(
        "--secured",
        action="store_true",
        help="also run tdwii serve with --authorize and --audit (a file and rsyslog over mTLS)",
    )
    args = parser.parse_args()

    names = ["tdwii", "pynetdicom"] if args.peer == "both" else [args.peer]
    if args.baseline:
        names.append("baseline")
    if args.secured:
        names.append("secured")
    with tempfile.TemporaryDirectory(prefix="tdwii-bench-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        certs = work / "certs"
        if not certs.exists():
            init_pki(certs)
        items = work / "items"
        if not items.exists():
            started = time.perf_counter()
            make_items(items, args.n)
            print(f"built {args.n} workitem files in {time.perf_counter() - started:.1f} s")
        walls: dict[str, list[float]] = {name: [] for name in names}
        cpus: dict[str, list[float]] = {name: [] for name in names}
        clients = [kind for kind in SCU_KINDS if kind in args.client]
        scu_n = min(args.scu_n, args.n)
        scu: dict[tuple[str, str], list[dict]] = {}
        inner: dict[str, list[float]] = {name: [] for name in names}  # in-process seconds
        repo = repository(work, certs) if args.secured else None
        if repo is not None:
            repo.start()
        for _run in range(args.runs):
            for name in names:  # interleaved: the same noise for every peer
                for client_kind in clients:
                    # a fresh peer (and database) each run: every run creates the same items
                    peer, port = start_peer(
                        name, work, certs, args.baseline, repo.tls_url if repo else ""
                    )
                    count = args.n if client_kind == "tdwii" else scu_n
                    try:
                        cpu0 = cpu_seconds(peer.pid)
                        wall, doc = one_run(work, items, port, client_kind, count)
                        cpu = cpu_seconds(peer.pid) - cpu0
                    finally:
                        peer.terminate()
                        try:
                            peer.wait(10)
                        except subprocess.TimeoutExpired:
                            peer.kill()
                    if client_kind != "tdwii":
                        scu.setdefault((client_kind, name), []).append(
                            {**doc, "wall": wall, "cpu": cpu}
                        )
                        print(
                            f"client={client_kind}-scu peer={name} n={count} "
                            f"created={doc['created']} wall={wall:.2f} s (whole process; "
                            f"in-process {doc['seconds']:.2f} s, "
                            f"rate={count / doc['seconds']:.0f}/s, one N-CREATE p50 "
                            f"{doc['p50'] * 1000:.1f} ms), server CPU "
                            f"{cpu / count * 1000:.2f} ms per N-CREATE"
                        )
                        continue
                    walls[name].append(wall)
                    cpus[name].append(cpu)
                    inner[name].append(doc["seconds"])
                    print(
                        f"peer={name} n={args.n} created={doc['created']} "
                        f"associations={doc['associations']} wall={wall:.2f} s "
                        f"rate={args.n / wall:.0f}/s (whole process; in-process "
                        f"{doc['seconds']:.2f} s), server CPU {cpu / args.n * 1000:.2f} ms "
                        "per N-CREATE"
                    )
        if scu:
            print(report_scu(scu, inner, scu_n, args.n))
        if repo is not None:
            audited = sum(b"110111" in line for line in repo.messages())
            repo.stop()
            print(f"the repository received {audited} Procedure Records over mutual TLS")
        if repo is not None and "tdwii" in clients:
            for what, figures in (("wall time", walls), ("server CPU", cpus)):
                pairs = sorted(
                    s / t for t, s in zip(figures["tdwii"], figures["secured"], strict=True)
                )
                print(
                    f"--authorize --audit (file + syslog+tls) / plain: "
                    f"{statistics.median(pairs):.3f}x the {what} (median of {len(pairs)} "
                    f"interleaved runs, {pairs[0]:.3f}-{pairs[-1]:.3f}x)"
                )
        if "tdwii" in clients and "tdwii" in names and "pynetdicom" in names:
            pairs = sorted(p / t for t, p in zip(walls["tdwii"], walls["pynetdicom"], strict=True))
            best = {name: min(w) for name, w in walls.items()}
            print(
                f"tdwii serve / minimal pynetdicom SCP: {statistics.median(pairs):.2f}x the rate "
                f"(median of {len(pairs)} interleaved runs, {pairs[0]:.2f}-{pairs[-1]:.2f}x; "
                f"best run each {best['pynetdicom'] / best['tdwii']:.2f}x)"
            )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
