"""Benchmark: wall time of a one-shot `tdwii echo --mtls` against DCMTK's `echoscu +tls`.

Starts DCMTK `storescp +tls` (TCP_NODELAY=1) on a loopback port with a fresh PKI,
runs each client N times as a whole process, prints medians and the ratio.
Usage: python bench/echo_oneshot.py [-n 15]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=15)
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "tdwii_cli", "pki", "init", "-q"],
            cwd=work,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        c = work / "certs"
        srv, cli, ca = (
            c / "servers/worklistmanager/worklistmanager",
            c / "clients/workitemcreator/workitemcreator",
            c / "rootCA/rootCA.pem",
        )
        port = free_port()
        scp = subprocess.Popen(
            ["/usr/bin/storescp", "+tls", f"{srv}.key", f"{srv}.pem", "+cf", str(ca), str(port)],
            env={**os.environ, "TCP_NODELAY": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(0.5)
            tdwii = ["tdwii", "echo", "--mtls", "localhost", str(port)]
            dcmtk = [
                "/usr/bin/echoscu",
                "+tls",
                f"{cli}.key",
                f"{cli}.pem",
                "+cf",
                str(ca),
                "localhost",
                str(port),
            ]
            os.chdir(work)
            timed(tdwii), timed(dcmtk)  # warm the page cache
            t = [timed(tdwii) for _ in range(n)]
            d = [timed(dcmtk) for _ in range(n)]
        finally:
            scp.kill()
            scp.wait()
    mt, md = statistics.median(t), statistics.median(d)
    print(f"tdwii echo --mtls   median {mt * 1000:.0f} ms (min {min(t) * 1000:.0f}) over {n} runs")
    print(f"DCMTK echoscu +tls  median {md * 1000:.0f} ms (min {min(d) * 1000:.0f}) over {n} runs")
    print(f"ratio tdwii/echoscu {mt / md:.2f}x")


if __name__ == "__main__":
    main()
