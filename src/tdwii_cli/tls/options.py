"""What the user asked of TLS, with the `tdwii pki init` layout filled in (plain data).

`resolve()` turns the shared TLS options into `TlsOptions` and checks that the
files exist; building the `ssl.SSLContext` from them is `tdwii_cli.tls.context`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tdwii_cli.errors import TdwiiError
from tdwii_cli.fileio import read_password_file

Role = Literal["server", "client"]
Mode = Literal["off", "tls", "mtls"]
ProfileName = Literal["bcp195-rfc8996", "bcp195-nd", "bcp195-ex"]
PROFILE_NAMES: tuple[ProfileName, ...] = ("bcp195-rfc8996", "bcp195-nd", "bcp195-ex")
DEFAULT_PROFILE: ProfileName = "bcp195-rfc8996"
DEFAULT_CA = Path("certs/rootCA/rootCA.pem")
DEFAULT_NODE = {
    "server": Path("certs/servers/worklistmanager/worklistmanager"),
    "client": Path("certs/clients/workitemcreator/workitemcreator"),
}


@dataclass(frozen=True)
class TlsOptions:
    """TLS settings of one side of a connection.

    `mode` is "off", "tls" (server authentication only) or "mtls" (both sides
    present and verify certificates). For a server in "tls" mode a client
    certificate is neither requested nor required.
    """

    role: Role
    mode: Mode = "off"
    ca: tuple[Path, ...] = ()
    cert: Path | None = None
    key: Path | None = None
    key_password_file: Path | None = None
    profile: ProfileName = DEFAULT_PROFILE
    crl: Path | None = None
    verify_hostname: bool = True

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def mutual(self) -> bool:
        return self.mode == "mtls"

    @property
    def mode_words(self) -> str:
        """'mutual TLS', 'TLS' or 'no TLS', for a listener's banner."""
        return {"mtls": "mutual TLS", "tls": "TLS", "off": "no TLS"}[self.mode]

    def key_password(self) -> bytes | None:
        """The private key password from `key_password_file` (its first line), or None."""
        if self.key_password_file is None:
            return None
        return read_password_file(self.key_password_file, "key password file")


def resolve(
    role: Role,
    mtls: bool = False,
    tls: bool = False,
    ca: list[Path] | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    key_password_file: Path | None = None,
    tls_profile: ProfileName = DEFAULT_PROFILE,
    crl: Path | None = None,
    verify_hostname: bool = True,
) -> TlsOptions:
    """Collect the TLS options; fill in `tdwii pki init`'s layout and check the files exist."""
    if mtls and tls:
        raise TdwiiError("--mtls and --tls exclude each other", hint="pick one")
    mode: Mode = "mtls" if mtls else "tls" if tls else "off"
    if mode == "off":
        if ca or cert or key:
            raise TdwiiError(
                "certificate options given without --mtls or --tls",
                hint="add --mtls (mutual TLS) or --tls (server authentication only)",
            )
        return TlsOptions(role=role, profile=tls_profile)
    cas = tuple(ca or ()) or (DEFAULT_CA,)
    node = DEFAULT_NODE[role]
    if role == "server" or mode == "mtls":  # servers always present a certificate
        cert = cert if cert is not None else node.with_suffix(".pem")
        key = key if key is not None else node.with_suffix(".key")
    elif cert is not None and key is None:
        raise TdwiiError("--cert given without --key")
    for kind, path in [("CA certificate", p) for p in cas] + [
        ("certificate", cert),
        ("private key", key),
        ("key password file", key_password_file),
        ("CRL", crl),
    ]:
        if path is None:
            continue
        if not path.is_file():
            hint = "run `tdwii pki init` here, or pass the file with its option"
            if path.exists():
                hint = "it is not a regular file"
            raise TdwiiError(f"{kind} {path} not found", hint=hint)
    return TlsOptions(
        role=role,
        mode=mode,
        ca=cas,
        cert=cert,
        key=key,
        key_password_file=key_password_file,
        profile=tls_profile,
        crl=crl,
        verify_hostname=verify_hostname,
    )
