"""What the user asked of TLS, with the `tdwii pki init` layout filled in (plain data).

`resolve()` turns the shared TLS options into `TlsOptions` and checks that the
files exist; building the `ssl.SSLContext` from them is `tdwii_cli.tls.context`'s job.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    crl_is_default: bool = False  # the CRL next to the CA, taken without --crl

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
    no_crl: bool = False,
    named_by: Mapping[str, str] | None = None,
) -> TlsOptions:
    """Collect the TLS options; fill in `tdwii pki init`'s layout and check the files exist.

    A mutual-TLS server whose one CA has a CRL next to it (the `tdwii pki` layout,
    `rootCA.crl.pem` by `rootCA.pem`) checks revocation against it unless `no_crl`.
    `named_by` says where a path came from, for the "not found" line (by parameter name:
    "ca", "cert", "key", "key_password_file", "crl"; the option names by default).
    """
    if crl is not None and no_crl:
        raise TdwiiError("--crl and --no-crl exclude each other", hint="pick one")
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
    cert_given, key_given = cert is not None, key is not None
    if role == "server" or mode == "mtls":  # servers always present a certificate
        cert = cert if cert is not None else node.with_suffix(".pem")
        key = key if key is not None else node.with_suffix(".key")
    elif cert is not None and key is None:
        raise TdwiiError("--cert given without --key")
    given = {"ca": bool(ca), "cert": cert_given, "key": key_given}
    for name, path in [("ca", p) for p in cas] + [
        ("cert", cert),
        ("key", key),
        ("key_password_file", key_password_file),
        ("crl", crl),
    ]:
        if path is not None and not path.is_file():
            raise _not_found(name, path, given.get(name, True), named_by or {})
    crl_is_default = False
    if crl is None and not no_crl and role == "server" and mode == "mtls" and len(cas) == 1:
        beside = crl_beside(cas[0])
        if beside.is_file():
            crl, crl_is_default = beside, True
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
        crl_is_default=crl_is_default,
    )


_KINDS = {
    "ca": ("CA certificate", "--ca"),
    "cert": ("certificate", "--cert"),
    "key": ("private key", "--key"),
    "key_password_file": ("key password file", "--key-password-file"),
    "crl": ("CRL", "--crl"),
}


def _not_found(name: str, path: Path, given: bool, named_by: Mapping[str, str]) -> TdwiiError:
    """'certificate X (named by --cert) not found', or the layout default that is missing."""
    kind, option = _KINDS[name]
    if path.exists():
        return TdwiiError(f"{kind} {path} is not a regular file")
    if given:
        source = named_by.get(name, option)
        return TdwiiError(f"{kind} {path} (from {source}) not found", hint="check the path")
    return TdwiiError(
        f"{kind} {path} not found (the `tdwii pki init` layout, used without {option})",
        hint=f"run `tdwii pki init` here, or pass the file with {option}",
    )


def crl_beside(ca: Path) -> Path:
    """Where `tdwii pki` keeps the CRL of the CA in `ca`: `rootCA.pem` -> `rootCA.crl.pem`."""
    return ca.with_name(f"{ca.stem}.crl.pem")
