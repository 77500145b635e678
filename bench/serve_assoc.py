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

    python bench/serve_assoc.py [-n 300] [--warmup 20] [--skip-dcmtk]

Prints p50/p90/p99 latency and the rate for each server and the ratio.
"""

from __future__ import annotations

import argparse
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


def one_association(ctx: ssl.SSLContext, port: int, rq: bytes, echo: bytes) -> float:
    """Connect, TLS, associate, C-ECHO, release; seconds taken."""
    start = time.perf_counter()
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    with ctx.wrap_socket(raw, server_hostname="localhost") as sock:
        sock.sendall(rq)
        kind, _ = pdu.read_pdu(sock)
        if kind != 0x02:
            raise RuntimeError(f"association not accepted (PDU type 0x{kind:02X})")
        sock.sendall(echo)
        if dimse.read_message(sock).command.status != 0:
            raise RuntimeError("C-ECHO failed")
        sock.sendall(pdu.RELEASE_RQ)
        kind, _ = pdu.read_pdu(sock)
        if kind != 0x06:
            raise RuntimeError(f"release not confirmed (PDU type 0x{kind:02X})")
    return time.perf_counter() - start


def client_context(certs: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(certs / "rootCA" / "rootCA.pem")
    node = certs / "clients" / "workitemcreator" / "workitemcreator"
    ctx.load_cert_chain(f"{node}.pem", f"{node}.key")
    return ctx


def measure(ctx: ssl.SSLContext, port: int, n: int, warmup: int) -> dict[str, float]:
    contexts = [pdu.PresentationContext(1, VERIFICATION, (IMPLICIT_VR_LE,))]
    rq = pdu.associate_rq("BENCH", "ANY-SCP", contexts)
    echo = dimse.encode_message(
        1, dimse.Command(dimse.C_ECHO_RQ, message_id=1, sop_class=VERIFICATION), None, 0
    )
    for _ in range(warmup):
        one_association(ctx, port, rq, echo)
    times = []
    begin = time.perf_counter()
    for _ in range(n):
        times.append(one_association(ctx, port, rq, echo))
    total = time.perf_counter() - begin
    times.sort()
    return {
        "p50": statistics.median(times) * 1000,
        "p90": times[int(0.9 * (n - 1))] * 1000,
        "p99": times[int(0.99 * (n - 1))] * 1000,
        "rate": n / total,
    }


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


def row(name: str, r: dict[str, float]) -> str:
    return (
        f"{name:<42} p50 {r['p50']:6.2f} ms  p90 {r['p90']:6.2f} ms  "
        f"p99 {r['p99']:6.2f} ms  {r['rate']:7.1f} assoc/s"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=300, help="associations measured per server")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--skip-dcmtk", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="tdwii-bench-"))
    try:
        subprocess.run(
            [sys.executable, "-m", "tdwii_cli", "pki", "init", "-q"],
            cwd=work,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        certs = work / "certs"
        ctx = client_context(certs)
        results: dict[str, dict[str, float]] = {}

        port = free_port()
        cmd = [sys.executable, "-m", "tdwii_cli", "serve", "--mtls", "--port", str(port)]
        cmd += ["-ba", "127.0.0.1", "--db", str(work / "bench.sqlite"), "-q"]
        proc = subprocess.Popen(cmd, cwd=work)
        try:
            wait_port(port, proc)
            results["tdwii serve --mtls"] = measure(ctx, port, args.n, args.warmup)
        finally:
            stop(proc)

        storescp = None if args.skip_dcmtk else dcmtk_storescp()
        if storescp:
            server = certs / "servers" / "worklistmanager" / "worklistmanager"
            for nodelay in ("0", "1"):
                port = free_port()
                env = dict(os.environ, TCP_NODELAY=nodelay)
                dcmtk_cmd = [storescp, "+tls", f"{server}.key", f"{server}.pem"]
                dcmtk_cmd += ["+cf", str(certs / "rootCA" / "rootCA.pem"), str(port)]
                proc = subprocess.Popen(dcmtk_cmd, cwd=work, env=env, stderr=subprocess.DEVNULL)
                try:
                    wait_port(port, proc)
                    name = f"DCMTK storescp +tls (TCP_NODELAY={nodelay})"
                    results[name] = measure(ctx, port, args.n, args.warmup)
                finally:
                    stop(proc)
        elif not args.skip_dcmtk:
            print("DCMTK storescp not found (apt-get install dcmtk); skipped", file=sys.stderr)

        print(f"sequential mTLS associations (associate, C-ECHO, release), n={args.n}")
        for name, r in results.items():
            print(row(name, r))
        dcmtk = [r for name, r in results.items() if name.startswith("DCMTK")]
        if dcmtk:
            best = max(dcmtk, key=lambda r: r["rate"])
            ours = results["tdwii serve --mtls"]
            print(
                f"tdwii / best DCMTK: {ours['rate'] / best['rate']:.1f}x the rate, "
                f"p50 {ours['p50']:.2f} ms vs {best['p50']:.2f} ms"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
