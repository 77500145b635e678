"""Shared test helpers: peer tools, a session PKI, TLS options and contexts, waiting, ports.

Other test modules append their own fixtures below; keep this part generic.

- `require_tool(name)`: path of an external tool (DCMTK's echoscu/storescp, openssl,
  keytool); skips when missing and the env var CI is unset, fails when CI is set.
  DCMTK names never resolve to pynetdicom's same-named Python scripts.
- `wait_until(predicate, timeout, what)`: poll until `predicate()` is truthy (returns it);
  fails naming what was awaited. Every polling wait with a deadline in the tests uses it.
- `pki_dir` (session): a folder where `init_pki` ran (EC P-256). Treat it as read-only;
  tests that revoke or reissue make their own PKI in `tmp_path` (or use `revoked_pki`).
- `other_ca_pki` (session): a second, independent PKI ("untrusted CA" tests);
  `revoked_pki` (session): a PKI whose two node certificates are in its CRL;
  `other_name_cert` (session): a `pki_dir` server certificate for "other.example" only.
- Paths inside such a PKI: `PKI_CA`, `PKI_SERVER`, `PKI_CLIENT`; `tls_options(root, role)`
  (tdwii's `TlsOptions`), `client_ssl_context(root)` / `server_ssl_context(root)` (plain
  Python `ssl` contexts, as a foreign peer makes them); `write_leaf(...)`: a fresh node
  certificate signed by a PKI's CA.
- `free_port()`: an unused TCP port on 127.0.0.1; `wait_port(port, proc)`: until it listens.
- `tdwii serve` in a subprocess: `start_tdwii_server(...)`, `TdwiiServer` (`wait_log`),
  fixtures `serve_workdir` / `tdwii_server` (module).
- `tdwii echo` and its peers (section at the end): `run_echo_cli(...)`, `mtls_args(...)`,
  `one_error_line(proc)`, `storescp_peer(...)`, `openssl_peer(...)`, `openssl_client(...)`,
  fixtures `dcmtk_tls_peer` / `dcmtk_plain_peer` (session).

Peers the tests drive or talk to (pynetdicom, hand-written sockets) are in tests/peers.py;
the hostile SCP of the client tests (a raw upper layer on `socket`) in tests/hostile.py.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tdwii_cli.tls.options import TlsOptions

T = TypeVar("T")

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
    if name not in _DCMTK_TOOLS:  # daemons (rsyslogd) live in sbin, not always in PATH
        return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    for folder in [*os.environ.get("PATH", "").split(os.pathsep), "/usr/bin", "/usr/local/bin"]:
        candidate = os.path.join(folder, name)
        usable = os.path.isfile(candidate) and os.access(candidate, os.X_OK)
        if usable and not _is_python_script(candidate):
            return candidate
    return None


def require_tool(name: str, package: str = "dcmtk openssl default-jre-headless") -> str:
    """Absolute path of tool `name`; skip (CI unset) or fail (CI set) when it is missing."""
    path = _find_tool(name)
    if path:
        return path
    return missing(name, package)


def missing(name: str, package: str) -> str:
    """Skip (CI unset) or fail (CI set): `name`, from Debian's `package`, is not installed."""
    message = f"{name} not installed (apt-get install {package})"
    if os.environ.get("CI"):
        pytest.fail(f"CI: required tool {message}")
    pytest.skip(message)
    raise AssertionError("unreachable")


# -- waiting ------------------------------------------------------------------------------


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str | Callable[[], str],
    interval: float = 0.01,
) -> T:
    """Call `predicate` until it returns something truthy, and return that; after `timeout`
    seconds fail with "timed out after N s waiting for WHAT" (`what` may be a callable, for
    words that describe the state at the end). Exceptions from `predicate` propagate."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            words = what() if callable(what) else what
            raise AssertionError(f"timed out after {timeout:g} s waiting for {words}")
        time.sleep(interval)


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, proc: Any, timeout: float = 15.0, what: str = "peer") -> None:
    """Return once 127.0.0.1:`port` accepts; fail if `proc` exits first or time runs out."""

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"{what} exited early with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    wait_until(listening, timeout, f"{what} to listen on {port}", interval=0.05)


# -- the test PKI: paths, TLS options, plain ssl contexts, extra certificates ----------------
# Paths below are relative to a PKI made by `init_pki` (`pki_dir`, `other_ca_pki`, or a
# test's own).

PKI_CA = "rootCA/rootCA.pem"
PKI_SERVER = "servers/worklistmanager/worklistmanager"  # + ".pem" / ".key"
PKI_CLIENT = "clients/workitemcreator/workitemcreator"  # + ".pem" / ".key"


def tls_options(
    pki_root: Path,
    role: str,
    mode: str = "mtls",
    node: str | None = None,
    ca: Path | None = None,
    **kw: Any,
) -> TlsOptions:
    """`TlsOptions` as `tls.options.resolve` would build them for the PKI at `pki_root`: the
    CA (`ca` if given), and the node's certificate and key (`node`: PKI_SERVER for a server,
    PKI_CLIENT for a client) when the side presents one (servers, mTLS clients). `kw`: any
    other field (profile, crl, verify_hostname, key_password_file), or cert/key themselves."""
    node = node or (PKI_SERVER if role == "server" else PKI_CLIENT)
    with_cert = role == "server" or mode == "mtls"
    fields: dict[str, Any] = {
        "ca": (ca or pki_root / PKI_CA,),
        "cert": pki_root / f"{node}.pem" if with_cert else None,
        "key": pki_root / f"{node}.key" if with_cert else None,
    }
    fields.update(kw)
    return TlsOptions(role=role, mode=mode, **fields)  # type: ignore[arg-type]


def client_ssl_context(
    pki_root: Path, node: str | None = PKI_CLIENT, ca: Path | None = None
) -> ssl.SSLContext:
    """A plain Python client context, as a foreign peer makes one (none of tdwii's profile
    settings): TLS 1.2 or later, trusting `ca` (the PKI's root CA by default), presenting
    `node`'s certificate (None: no client certificate); host names are checked."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(ca or pki_root / PKI_CA)
    if node is not None:
        ctx.load_cert_chain(pki_root / f"{node}.pem", pki_root / f"{node}.key")
    return ctx


def server_ssl_context(
    pki_root: Path,
    node: str = PKI_SERVER,
    ca: Path | None = None,
    *,
    mutual: bool = True,
    crl: Path | None = None,
) -> ssl.SSLContext:
    """A plain Python server context with `node`'s certificate: TLS 1.2 or later; when
    `mutual`, a client certificate from `ca` (the PKI's root CA by default) is required,
    checked against `crl` when given; otherwise none is asked for and no CA is loaded."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(pki_root / f"{node}.pem", pki_root / f"{node}.key")
    if mutual:
        ctx.load_verify_locations(ca or pki_root / PKI_CA)
        ctx.verify_mode = ssl.CERT_REQUIRED
    if crl is not None:
        ctx.load_verify_locations(crl)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def write_leaf(
    folder: Path, pki_root: Path, name: str, password: bytes | None = None, **kw: Any
) -> Path:
    """A node certificate signed by `pki_root`'s CA, `make_leaf(**kw)` (validity, SANs, key
    ...), written to FOLDER/NAME.pem and FOLDER/NAME.key (encrypted with `password` if
    given); returns the .pem path."""
    from tdwii_cli.pki.authority import load_ca
    from tdwii_cli.pki.certs import make_leaf, write_cert
    from tdwii_cli.pki.keys import write_key

    ca_key, ca_cert = load_ca(pki_root)
    key, cert = make_leaf(ca_key, ca_cert, name, **kw)
    folder.mkdir(parents=True, exist_ok=True)
    write_key(folder / f"{name}.key", key, password=password)
    write_cert(folder / f"{name}.pem", cert)
    return folder / f"{name}.pem"


def unfit_leaf(pki_root: Path, folder: Path, name: str, *, ca: bool = False) -> Path:
    """FOLDER/NAME.pem (and .key): a client certificate from `pki_root`'s CA that OpenSSL
    accepts for client auth but a TLS peer must not use: keyAgreement without
    digitalSignature, or CA:TRUE."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    from tdwii_cli.pki.authority import load_ca
    from tdwii_cli.pki.certs import _key_usage, write_cert
    from tdwii_cli.pki.keys import write_key

    ca_key, ca_cert = load_ca(pki_root)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    usages = ("digital_signature", "key_cert_sign") if ca else ("key_agreement",)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(_key_usage(*usages), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    )
    pem = folder / f"{name}.pem"
    write_cert(pem, builder.sign(ca_key, hashes.SHA256()))  # type: ignore[arg-type]
    write_key(pem.with_suffix(".key"), key)
    return pem


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


@pytest.fixture(scope="session")
def revoked_pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PKI (layout of `pki_dir`) whose server (worklistmanager) and client
    (workitemcreator) certificates are both revoked in rootCA/rootCA.crl.pem."""
    from tdwii_cli.pki.authority import init_pki, revoke

    directory = tmp_path_factory.mktemp("revoked") / "certs"
    init_pki(directory)
    revoke(directory, "workitemcreator")
    revoke(directory, "worklistmanager")
    return directory


@pytest.fixture(scope="session")
def other_name_cert(pki_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(pem, key) of a server certificate from the `pki_dir` CA for "other.example" only
    (no default SANs: not for localhost, 127.0.0.1 or ::1)."""
    pem = write_leaf(
        tmp_path_factory.mktemp("othername"),
        pki_dir,
        "other",
        sans=["other.example"],
        default_sans=False,
    )
    return pem, pem.with_suffix(".key")


# -- `tdwii serve` in a subprocess --------------------------------------------------------


class TdwiiServer:
    """A running `python -m tdwii_cli serve` and where to find it (see `start_tdwii_server`)."""

    def __init__(self, proc: Any, host: str, port: int, db: Path, log: Path, workdir: Path):
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

        def found() -> str:
            text = self.log_text()[start:]
            return text if needle.lower() in text.lower() else ""

        def tail() -> str:
            return f"{needle!r} in the server log; it ends:\n{self.log_text()[start:][-3000:]}"

        return wait_until(found, timeout, tail, interval=0.05)

    def stop(self) -> int:
        """SIGTERM, wait, return the exit code (kill -9 if it does not stop)."""
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

    def listening() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"tdwii serve exited {proc.returncode}: {server.log_text()}")
        return "listening on" in server.log_text()

    try:
        wait_until(listening, 30, lambda: f"tdwii serve to start: {server.log_text()}", 0.05)
    except AssertionError:
        server.stop()
        raise
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


# -- `tdwii echo` and its peers: DCMTK storescp, openssl s_server and s_client ------------
# Used by the echo tests (tests/test_echo.py, tests/test_echo_tls.py) and by the TLS tests.


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
def openssl_peer(cert: Path, key: Path, *extra: str, answer: bool = True) -> Iterator[int]:
    """`openssl s_server` (a TLS peer that is no DICOM node) with `cert`/`key` on a free
    loopback port; yields the port, killed on exit. `extra`: e.g. "-tls1_1". With
    `answer=False` it runs `-quiet` on empty input: it completes each handshake, then hangs
    up, as a server that does not answer."""
    exe = require_tool("openssl")
    port = free_port()
    cmd = [exe, "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(cert), "-key", str(key)]
    # answering, stdin stays an open pipe: s_server reads commands from it and may stop at its end
    stdin = subprocess.PIPE if answer else subprocess.DEVNULL
    cmd = [*cmd, *extra] if answer else [*cmd, *extra, "-quiet"]
    with _listening_peer(cmd, port, "openssl s_server", stdin=stdin):
        yield port


def openssl_client(
    port: int, *args: str, cwd: Path | None = None, timeout: float = 20
) -> subprocess.CompletedProcess[str]:
    """`openssl s_client -connect 127.0.0.1:PORT ARGS` with empty input (it connects, does
    the handshake and hangs up); its output captured as text."""
    exe = require_tool("openssl")
    return subprocess.run(
        [exe, "s_client", "-connect", f"127.0.0.1:{port}", *args],
        cwd=cwd,
        input="",
        capture_output=True,
        text=True,
        timeout=timeout,
    )


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


def undefined_lengths(ds: Any) -> bytes:
    """`ds` encoded Explicit VR Little Endian with every sequence and item of undefined
    length (as some peers send them); `ds` itself is not changed."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    from tdwii_cli.dicom import codec

    copy = codec.decode(codec.encode(ds))
    for elem in copy.iterall():
        if elem.VR == "SQ":
            elem.is_undefined_length = True
            for item in elem.value:
                item.is_undefined_length_sequence_item = True
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, copy)
    return fp.getvalue()
