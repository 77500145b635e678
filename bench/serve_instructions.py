#!/usr/bin/env python3
"""Benchmark: instructions each server executes per mTLS association, counted by valgrind's
callgrind: repeatable whatever else the machine does, where CPU seconds on this shared
machine move by 10-20% between runs.

Each server runs under `valgrind --tool=callgrind --instr-atstart=no`; after its start-up and
a warm-up, counting is switched on (`callgrind_control -i on`), the same hand-written client
as `serve_assoc.py` (TCP_NODELAY) runs N sequential associations (TLS, associate, C-ECHO,
release), and counting is switched off. User-space instructions only: what the kernel does
for each server's system calls is not in it (`serve_assoc.py` measures CPU time with it).

    python bench/serve_instructions.py [-n 200] [--baseline SRC]

Prints instructions per association for `tdwii serve --mtls` (CRL checked), `--no-crl`, the
floor (`bare_tls_server.py`) and the baseline if given, and tdwii's ratio to the floor.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from serve_assoc import client_context, free_port, one_association  # noqa: E402


def python_binary() -> str:
    """The interpreter itself (a pyenv shim is a shell script valgrind would measure)."""
    return os.path.realpath(sys.executable)


def counted(cmd: list[str], port: int, certs: Path, n: int, env: dict[str, str]) -> int:
    """Instructions `cmd` (a server on `port`) executes for `n` associations."""
    out = Path(tempfile.mkdtemp(prefix="tdwii-cg-")) / "callgrind.out"
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no"]
    proc = subprocess.Popen(
        [*valgrind, f"--callgrind-out-file={out}", *cmd],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **env},
    )
    try:
        deadline = time.monotonic() + 300  # start-up under valgrind is slow
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"{cmd[0]} did not listen on {port}") from None
                time.sleep(0.5)
        ctx = client_context(certs)
        for _ in range(10):  # warm-up: caches filled, threads started
            one_association(ctx, port, True)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True,
                       capture_output=True)  # fmt: skip
        for _ in range(n):
            one_association(ctx, port, True)
        subprocess.run(["callgrind_control", "-i", "off", str(proc.pid)], check=True,
                       capture_output=True)  # fmt: skip
    finally:
        proc.terminate()
        proc.wait(60)
    total = 0
    for part in out.parent.glob("callgrind.out*"):
        for line in part.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    shutil.rmtree(out.parent, ignore_errors=True)
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=200, help="associations counted per server")
    parser.add_argument("--baseline", type=Path, metavar="SRC", help="also an older tdwii")
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (with callgrind_control) is needed: apt-get install valgrind")
        return 1
    work = Path(tempfile.mkdtemp(prefix="tdwii-bench-"))
    try:
        python = python_binary()
        subprocess.run([python, "-m", "tdwii_cli", "pki", "init", "-q"], cwd=work, check=True,
                       stdout=subprocess.DEVNULL)  # fmt: skip
        certs = work / "certs"
        os.chdir(work)
        servers: dict[str, tuple[list[str], dict[str, str]]] = {}
        serve = [python, "-m", "tdwii_cli", "serve", "--mtls", "-ba", "127.0.0.1", "-q"]
        servers["tdwii serve --mtls"] = (serve, {})
        servers["tdwii serve --mtls --no-crl"] = ([*serve, "--no-crl"], {})
        if args.baseline:
            servers["baseline tdwii serve --mtls"] = (
                serve,
                {"PYTHONPATH": str(args.baseline.resolve())},
            )
        servers["bare Python TLS server (floor)"] = ([python, str(HERE / "bare_tls_server.py")], {})
        results: dict[str, float] = {}
        for name, (cmd, env) in servers.items():
            port = free_port()
            if "tdwii_cli" in cmd:
                full = [*cmd, "--port", str(port), "--db", str(work / f"{port}.sqlite")]
            else:
                full = [*cmd, str(port)]
            results[name] = counted(full, port, certs, args.n, env) / args.n
            print(f"  {name:<38} {results[name] / 1e6:7.2f} M instructions per association")
        floor = results["bare Python TLS server (floor)"]
        for name in results:
            if name.startswith(("tdwii", "baseline")):
                print(f"  {name} / floor: {results[name] / floor:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
