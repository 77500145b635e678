"""Benchmark: whole-process start-up of one-shot commands, each against its yardstick.

- `tdwii echo --mtls` (one C-ECHO over mutual TLS) against DCMTK's `echoscu +tls`, both
  to DCMTK `storescp +tls` started with TCP_NODELAY=1, with a fresh PKI;
- the same two to `tdwii serve --mtls`: echoscu as it comes (DCMTK's defaults, Nagle on,
  TCP_NODELAY not in its environment) against tdwii serve and against storescp (issue 21's
  target: within 1.1x), and `tdwii echo` to both;
- `tdwii --help` against `bench/minimal_typer_app.py --help` (typer with the same help style),
  and that app with click's plain help (what typer's rich help costs by itself);
- `python -c pass`, the interpreter's own floor on this machine.

tdwii's bytecode is compiled first, as `pip install` does (an editable install under
PYTHONDONTWRITEBYTECODE=1 would otherwise recompile every module on every run). The
commands run interleaved, N times each; medians, minimums and the ratios are printed.
`tdwii` is the `tdwii` on PATH (its package as `PYTHONPATH` says) and `tdwii serve` the
same package run as `python -m tdwii_cli`.

Usage: python bench/echo_oneshot.py [-n 15]
"""

from __future__ import annotations

import argparse
import compileall
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def timed(cmd: list[str]) -> float:
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}  # DCMTK's default
    if cmd[:1] == ["MINIMAL_PLAIN_HELP=1"]:
        cmd, env = cmd[1:], {**env, "MINIMAL_PLAIN_HELP": "1"}
    start = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=15)
    n = parser.parse_args().n
    import tdwii_cli

    compileall.compile_dir(Path(tdwii_cli.__file__).parent, quiet=1)
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
        port, served = free_port(), free_port()
        scp = subprocess.Popen(
            ["/usr/bin/storescp", "+tls", f"{srv}.key", f"{srv}.pem", "+cf", str(ca), str(port)],
            env={**os.environ, "TCP_NODELAY": "1"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        serve = subprocess.Popen(
            [sys.executable, "-m", "tdwii_cli", "serve", "--mtls", "--port", str(served),
             "-ba", "127.0.0.1", "--db", str(work / "oneshot.sqlite"), "-q"],
            cwd=work,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        echoscu = ["/usr/bin/echoscu", "+tls", f"{cli}.key", f"{cli}.pem", "+cf", str(ca)]
        commands = {
            "tdwii echo --mtls": ["tdwii", "echo", "--mtls", "localhost", str(port)],
            "DCMTK echoscu +tls": [*echoscu, "localhost", str(port)],
            "echoscu -> tdwii serve": [*echoscu, "localhost", str(served)],
            "tdwii echo -> tdwii serve": ["tdwii", "echo", "--mtls", "localhost", str(served)],
            "tdwii --help": ["tdwii", "--help"],
            "minimal typer app --help": [
                sys.executable,
                str(HERE / "minimal_typer_app.py"),
                "--help",
            ],
            "minimal, plain help": [
                "MINIMAL_PLAIN_HELP=1",
                sys.executable,
                str(HERE / "minimal_typer_app.py"),
                "--help",
            ],
            "python -c pass": [sys.executable, "-c", "pass"],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        try:
            wait_port(port)
            wait_port(served)
            os.chdir(work)
            for cmd in commands.values():  # warm the page cache
                timed(cmd)
            for _ in range(n):
                for name, cmd in commands.items():
                    times[name].append(timed(cmd))
        finally:
            scp.kill()
            scp.wait()
            serve.terminate()
            serve.wait(10)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(
            f"{name:26} median {med[name] * 1000:5.0f} ms (min {min(t) * 1000:4.0f}) over {n} runs"
        )
    echo = med["tdwii echo --mtls"] / med["DCMTK echoscu +tls"]
    helps = med["tdwii --help"] / med["minimal typer app --help"]
    print(f"ratio tdwii echo / echoscu          {echo:.2f}x")
    print(f"ratio tdwii --help / minimal typer  {helps:.2f}x")
    field = med["echoscu -> tdwii serve"] / med["DCMTK echoscu +tls"]
    ours = med["tdwii echo -> tdwii serve"] / med["tdwii echo --mtls"]
    print(f"ratio echoscu: tdwii serve / storescp {field:.2f}x (target <= 1.1x)")
    print(f"ratio tdwii echo: tdwii serve / storescp {ours:.2f}x")


if __name__ == "__main__":
    main()
