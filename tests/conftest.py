"""Shared test helpers: peer tools, a session PKI, free ports.

Other test modules append their own fixtures below; keep this part generic.

- `require_tool(name)`: path of an external tool (DCMTK's echoscu/storescp, openssl,
  keytool); skips when missing and the env var CI is unset, fails when CI is set.
  DCMTK names never resolve to pynetdicom's same-named Python scripts.
- `pki_dir` (session): a folder where `init_pki` ran (EC P-256). Treat it as read-only;
  tests that revoke or reissue make their own PKI in `tmp_path`.
- `other_ca_pki` (session): a second, independent PKI ("untrusted CA" tests).
- `free_port()`: an unused TCP port on 127.0.0.1; `wait_port(port, proc)`: until it listens.
- `tdwii echo` and its peers (section at the end): `run_echo_cli(...)`, `mtls_args(...)`,
  `one_error_line(proc)`, `storescp_peer(...)`, `openssl_peer(...)`, fixtures
  `dcmtk_tls_peer` / `dcmtk_plain_peer` (session).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# DCMTK tools that pynetdicom also installs as Python console scripts under the same name.
_DCMTK_TOOLS = {"echoscu", "echoscp", "storescu", "storescp", "findscu", "getscu", "movescu"}


def _is_python_script(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return False
    return head.startswith(b"#!") and (b"python" in head or b"pyenv" in head)


def _find_tool(name: str) -> str | None:
    if name not in _DCMTK_TOOLS:
        return shutil.which(name)
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]:
        candidate = os.path.join(folder, name)
        usable = os.path.isfile(candidate) and os.access(candidate, os.X_OK)
        if usable and not _is_python_script(candidate):
            return candidate
    return None


def require_tool(name: str) -> str:
    """Absolute path of tool `name`; skip (CI unset) or fail (CI set) when it is missing."""
    path = _find_tool(name)
    if path:
        return path
    message = f"{name} not installed (apt-get install dcmtk openssl default-jre-headless)"
    if os.environ.get("CI"):
        pytest.fail(f"CI: required tool {message}")
    pytest.skip(message)
    raise AssertionError("unreachable")


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: object, timeout: float = 15.0, what: str = "peer") -> None:
    """Return once 127.0.0.1:`port` accepts; fail if `proc` exits first or time runs out."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:  # type: ignore[attr-defined]
            raise AssertionError(f"{what} exited early with {proc.returncode}")  # type: ignore[attr-defined]
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port} within {timeout:g} s")


@pytest.fixture(scope="session")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PKI made by `tdwii_cli.pki.init_pki`: DIR/rootCA, DIR/servers/..., DIR/clients/...

    Files: rootCA/rootCA.{pem,key,p12,crl.pem},
    servers/worklistmanager/worklistmanager.{pem,key,p12},
    clients/workitemcreator/workitemcreator.{pem,key,p12}; PKCS#12 password "secret".
    Read-only for tests.
    """
    from tdwii_cli.pki.authority import init_pki

    directory = tmp_path_factory.mktemp("pki") / "certs"
    init_pki(directory)
    return directory


@pytest.fixture(scope="session")
def other_ca_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second PKI with its own root CA (same layout as `pki_dir`), trusted by nobody."""
    from tdwii_cli.pki.authority import init_pki

    directory = tmp_path_factory.mktemp("other-pki") / "certs"
    init_pki(directory, org="other")
    return directory


# -- `tdwii serve` in a subprocess (issue 4) ---------------------------------------------


class TdwiiServer:
    """A running `python -m tdwii_cli serve` and where to find it (see `start_tdwii_server`)."""

    def __init__(self, proc: object, host: str, port: int, db: Path, log: Path, workdir: Path):
        self.proc = proc
        self.host = host
        self.port = port
        self.db = db
        self.log = log
        self.workdir = workdir

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_log(self, needle: str, start: int = 0, timeout: float = 10.0) -> str:
        """The log text from offset `start` once it contains `needle` (case-insensitive)."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            text = self.log_text()[start:]
            if needle.lower() in text.lower():
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} not in the server log:\n{text[-3000:]}")
            time.sleep(0.05)

    def stop(self) -> int:
        """SIGTERM, wait, return the exit code (kill -9 if it does not stop)."""
        import subprocess

        proc = self.proc
        assert isinstance(proc, subprocess.Popen)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        return int(proc.returncode)


def start_tdwii_server(
    workdir: Path, *args: str, db: Path | None = None, tls: bool = True, log_name: str = "serve"
) -> TdwiiServer:
    """Start `tdwii serve` in `workdir` (which holds `certs/` from `tdwii pki init`), on a free
    loopback port, logging at -v to a file; returns once it listens."""
    import subprocess
    import sys
    import time

    port = free_port()
    db = db or workdir / "tdwii.sqlite"
    log = workdir / f"{log_name}-{port}.log"
    cmd = [sys.executable, "-m", "tdwii_cli", "serve", "--port", str(port), "-ba", "127.0.0.1"]
    cmd += ["--db", str(db), *(["--mtls"] if tls else []), *args]
    if not any(a in args for a in ("-d", "--debug", "-q", "--log-level")):
        cmd.append("-v")
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.DEVNULL, stderr=fh)
    server = TdwiiServer(proc, "127.0.0.1", port, db, log, workdir)
    deadline = time.monotonic() + 30
    while "listening on" not in server.log_text():
        if proc.poll() is not None:
            raise AssertionError(f"tdwii serve exited {proc.returncode}: {server.log_text()}")
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"tdwii serve did not start: {server.log_text()}")
        time.sleep(0.05)
    return server


@pytest.fixture(scope="module")
def serve_workdir(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with `certs/` as `tdwii pki init` leaves it (a copy of `pki_dir`)."""
    workdir = tmp_path_factory.mktemp("serve")
    shutil.copytree(pki_dir, workdir / "certs")
    return workdir


@pytest.fixture(scope="module")
def tdwii_server(serve_workdir: Path):  # type: ignore[no-untyped-def]
    """`tdwii serve --mtls` with the pki layout's defaults (no certificate flags),
    handshake timeout 3 s; yields a `TdwiiServer` (host, port, db, log)."""
    server = start_tdwii_server(serve_workdir, "--handshake-timeout", "3")
    try:
        yield server
    finally:
        server.stop()


# -- `tdwii echo` and its peers: DCMTK storescp, openssl s_server (echo tests) ------------
# Used by tests/test_echo.py and tests/test_echo_tls.py. Paths below are relative to a PKI
# made by `init_pki` (`pki_dir`, `other_ca_pki`, or a test's own).

PKI_CA = "rootCA/rootCA.pem"
PKI_SERVER = "servers/worklistmanager/worklistmanager"  # + ".pem" / ".key"
PKI_CLIENT = "clients/workitemcreator/workitemcreator"  # + ".pem" / ".key"


def run_echo_cli(
    *args: str,
    timeout: float = 60.0,
    python_flags: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """`python [FLAGS] -m tdwii_cli echo ARGS`, stdout and stderr captured as text."""
    return subprocess.run(
        [sys.executable, *python_flags, "-m", "tdwii_cli", "echo", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def mtls_args(root: Path, node: str = PKI_CLIENT, ca: Path | None = None) -> list[str]:
    """`--mtls -ca CA -cert NODE.pem -key NODE.key` for the PKI at `root` (CA: `ca` if given)."""
    return [
        "--mtls",
        "-ca",
        str(ca or root / PKI_CA),
        "-cert",
        f"{root / node}.pem",
        "-key",
        f"{root / node}.key",
    ]


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """The single `tdwii: error: ...` line on stderr (asserts exactly one and no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tdwii: error: ")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@contextlib.contextmanager
def _listening_peer(cmd: list[str], port: int, what: str, **popen: object) -> Iterator[int]:
    """Run `cmd`, yield `port` once it listens; always kill and reap it."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **popen)  # type: ignore[call-overload]
    try:
        wait_port(port, proc, what=what)
        yield port
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdin:
            proc.stdin.close()


@contextlib.contextmanager
def storescp_peer(root: Path | None, *extra: str, node: str = PKI_SERVER) -> Iterator[int]:
    """DCMTK storescp on a free loopback port (yields the port; killed on exit).

    With `root`: `+tls NODE.key NODE.pem +cf CA` from that PKI (client certificate required);
    without: plain DICOM. `extra` goes before the port (e.g. "--refuse", "+pz")."""
    exe = require_tool("storescp")
    port = free_port()
    tls = []
    if root is not None:
        tls = ["+tls", f"{root / node}.key", f"{root / node}.pem", "+cf", str(root / PKI_CA)]
    cmd = [exe, *tls, *extra, str(port)]
    env = {**os.environ, "TCP_NODELAY": "1"}
    with _listening_peer(cmd, port, "storescp", stdin=subprocess.DEVNULL, env=env):
        yield port


@contextlib.contextmanager
def openssl_peer(cert: Path, key: Path, *extra: str) -> Iterator[int]:
    """`openssl s_server` (a TLS peer that is no DICOM node) with `cert`/`key` on a free
    loopback port; yields the port, killed on exit. `extra`: e.g. "-tls1_1"."""
    exe = require_tool("openssl")
    port = free_port()
    cmd = [exe, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key)]
    # stdin stays an open pipe: s_server reads commands from it and may stop at its end
    with _listening_peer([*cmd, *extra], port, "openssl s_server", stdin=subprocess.PIPE):
        yield port


@pytest.fixture(scope="session")
def dcmtk_tls_peer(pki_dir: Path) -> Iterator[int]:
    """DCMTK storescp +tls with the `pki_dir` server certificate, requiring a client
    certificate from the `pki_dir` CA (mutual TLS); yields its port."""
    with storescp_peer(pki_dir) as port:
        yield port


@pytest.fixture(scope="session")
def dcmtk_plain_peer() -> Iterator[int]:
    """DCMTK storescp speaking plain DICOM (no TLS); yields its port."""
    with storescp_peer(None) as port:
        yield port
