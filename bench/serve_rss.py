#!/usr/bin/env python3
"""Benchmark: `tdwii serve --mtls` memory over many associations (associate, C-ECHO, release).

Runs `-n` associations (10,000 by default) from two client processes and prints
the server's resident set size (VmRSS from /proc) after each tenth, then the
growth from the first tenth to the end; flat means no per-association leak.

    python bench/serve_rss.py [-n 10000]
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import tempfile
from pathlib import Path

from serve_assoc import _clients_run, free_port, stop, wait_port


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tdwii-rss-"))
    tdwii = [sys.executable, "-m", "tdwii_cli"]
    subprocess.run([*tdwii, "pki", "init", "-q"], cwd=work, check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    cmd = [*tdwii, "serve", "--mtls", "--port", str(port), "-ba", "127.0.0.1"]
    proc = subprocess.Popen([*cmd, "--db", str(work / "rss.sqlite"), "-q"], cwd=work)
    try:
        wait_port(port, proc)
        step = max(2, args.n // 10)
        sizes = []
        with multiprocessing.get_context("fork").Pool(2) as pool:
            for done in range(step, args.n + 1, step):
                pool.map(_clients_run, [(work / "certs", port, step // 2)] * 2)
                sizes.append(rss_kb(proc.pid))
                print(f"after {done:6d} associations: server RSS {sizes[-1] / 1024:6.1f} MiB")
        print(
            f"RSS growth from {step} to {args.n} associations: "
            f"{(sizes[-1] - sizes[0]) / 1024:+.1f} MiB"
        )
    finally:
        stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
