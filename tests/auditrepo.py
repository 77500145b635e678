"""An Audit Record Repository for the tests and `bench/`: rsyslog (Debian's package, with its
OpenSSL network stream driver) on loopback, taking syslog over mutual TLS (RFC 5425: a client
certificate from the test PKI's CA is required) and over UDP (RFC 5426), and writing every
message it receives, as received, one per line, to `received.log` (TLS) and
`received-udp.log` (UDP) in its folder.

    with Repository(folder, certs) as repo:   # started; stopped (SIGTERM) at the end
        repo.tls_url, repo.udp_url             # for `tdwii serve --audit`
        repo.stop(); repo.start()              # the same ports again
        repo.messages()                        # what it has written so far (bytes, in order)

Its server certificate is issued into `certs` as servers/auditrepo (SANs localhost,
127.0.0.1, ::1). `parse(line)` splits an RFC 5424 line into its header fields and the XML.
"""

from __future__ import annotations

import glob
import signal
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

from conftest import free_port, missing, require_tool, wait_port, wait_until
from tdwii_cli.pki.authority import issue_node

NODE = "servers/auditrepo/auditrepo"
BOM = b"\xef\xbb\xbf"

_CONFIG = """
global(
  workDirectory="{work}"
  maxMessageSize="64k"
  DefaultNetstreamDriver="ossl"
  DefaultNetstreamDriverCAFile="{ca}"
  DefaultNetstreamDriverCertFile="{cert}"
  DefaultNetstreamDriverKeyFile="{key}"
)
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="tls") {{ action(type="omfile" file="{out}" template="raw") }}
ruleset(name="udp") {{ action(type="omfile" file="{udp_out}" template="raw") }}
module(load="imtcp" StreamDriver.Name="ossl" StreamDriver.Mode="1"
       StreamDriver.AuthMode="x509/certvalid")
input(type="imtcp" port="{tcp}" address="127.0.0.1" ruleset="tls")
module(load="imudp")
input(type="imudp" port="{udp}" address="127.0.0.1" ruleset="udp")
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _require_openssl_driver() -> None:
    """rsyslog-openssl's module must be there (a missing one fails in CI like a tool)."""
    if not glob.glob("/usr/lib/*/rsyslog/lmnsd_ossl.so") + glob.glob("/usr/lib/rsyslog/*ossl*"):
        missing("rsyslog's OpenSSL driver (lmnsd_ossl.so)", "rsyslog-openssl")


class Repository:
    """See the module docstring."""

    def __init__(self, folder: Path, certs: Path) -> None:
        self.exe = require_tool("rsyslogd", "rsyslog rsyslog-openssl")
        _require_openssl_driver()
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "work").mkdir(exist_ok=True)
        if not (certs / f"{NODE}.pem").exists():
            issue_node(certs, "server", "auditrepo")
        self.tcp_port, self.udp_port = free_port(), free_udp_port()
        self.received = folder / "received.log"  # over TLS
        self.received_udp = folder / "received-udp.log"
        self.config = folder / "rsyslog.conf"
        self.config.write_text(
            _CONFIG.format(
                work=folder / "work",
                ca=certs / "rootCA/rootCA.pem",
                cert=certs / f"{NODE}.pem",
                key=certs / f"{NODE}.key",
                tcp=self.tcp_port,
                udp=self.udp_port,
                out=self.received,
                udp_out=self.received_udp,
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def tls_url(self) -> str:
        return f"syslog+tls://127.0.0.1:{self.tcp_port}"

    @property
    def udp_url(self) -> str:
        return f"udp://127.0.0.1:{self.udp_port}"

    def start(self) -> None:
        log = (self.folder / "rsyslogd.out").open("ab")
        self.proc = subprocess.Popen(
            [self.exe, "-n", "-f", str(self.config), "-i", str(self.folder / "rsyslogd.pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        wait_port(self.tcp_port, self.proc, what="rsyslogd")

    def stop(self) -> None:
        """SIGTERM, and wait until it has exited (its ports are free again)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> Repository:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def messages(self, udp: bool = False) -> list[bytes]:
        """Every message received so far over TLS (or UDP), in the order received."""
        try:
            data = (self.received_udp if udp else self.received).read_bytes()
        except FileNotFoundError:
            return []
        return [line for line in data.split(b"\n") if line]

    def wait_for(self, count: int, timeout: float = 60.0) -> list[bytes]:
        """The messages once there are at least `count`."""

        def enough() -> list[bytes]:
            got = self.messages()
            return got if len(got) >= count else []

        def words() -> str:
            return f"{count} messages at rsyslog, got {len(self.messages())}"

        return wait_until(enough, timeout, words, 0.05)


@dataclass(frozen=True)
class Line:
    """An RFC 5424 message as tdwii frames it."""

    pri: int
    version: str
    timestamp: str
    hostname: str
    app: str
    procid: str
    msgid: str
    structured: str
    xml: bytes


def parse(line: bytes) -> Line:
    head, sep, xml = line.partition(b" " + BOM)
    assert sep, f"no BOM before the MSG: {line[:120]!r}"
    pri_version, timestamp, hostname, app, procid, msgid, structured = head.decode().split(" ")
    assert pri_version.startswith("<") and ">" in pri_version, pri_version
    pri, _, version = pri_version[1:].partition(">")
    return Line(int(pri), version, timestamp, hostname, app, procid, msgid, structured, xml)
