"""The TLS option group shared by serve, create-workitem and echo (declared once, here).

This module only collects and resolves the options (paths, defaults); building
the `ssl.SSLContext` from them is `tdwii_cli.tls`'s job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import typer

from tdwii_cli.errors import TdwiiError
from tdwii_cli.optgroups import option_group, param

Role = Literal["server", "client"]
PROFILES = ("bcp195-rfc8996", "bcp195-nd", "bcp195-ex")
DEFAULT_CA = Path("certs/rootCA/rootCA.pem")
DEFAULT_NODE = {
    "server": Path("certs/servers/worklistmanager/worklistmanager"),
    "client": Path("certs/clients/workitemcreator/workitemcreator"),
}
PANEL = "TLS"


@dataclass(frozen=True)
class TlsOptions:
    """What the user asked for on the command line, with `tdwii pki` defaults filled in.

    `mode` is "off", "tls" (server authentication only) or "mtls" (both sides
    present and verify certificates). For a server in "tls" mode a client
    certificate is neither requested nor required.
    """

    role: Role
    mode: Literal["off", "tls", "mtls"] = "off"
    ca: tuple[Path, ...] = ()
    cert: Path | None = None
    key: Path | None = None
    key_password_file: Path | None = None
    profile: str = "bcp195-rfc8996"
    crl: Path | None = None
    verify_hostname: bool = True
    defaults_used: tuple[str, ...] = field(default=())

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    @property
    def mutual(self) -> bool:
        return self.mode == "mtls"

    @property
    def needs_own_certificate(self) -> bool:
        """Servers always present one; clients only for mutual TLS."""
        return self.enabled and (self.role == "server" or self.mutual)

    def key_password(self) -> bytes | None:
        """The private key password from `--key-password-file` (first line), or None."""
        if self.key_password_file is None:
            return None
        try:
            data = self.key_password_file.read_bytes()
        except OSError as exc:
            raise TdwiiError(
                f"cannot read key password file {self.key_password_file}: {exc.strerror}"
            ) from None
        return data.splitlines()[0] if data.strip() else b""


def resolve(
    role: Role,
    mtls: bool = False,
    tls: bool = False,
    ca: list[Path] | None = None,
    cert: Path | None = None,
    key: Path | None = None,
    key_password_file: Path | None = None,
    tls_profile: str = "bcp195-rfc8996",
    crl: Path | None = None,
    verify_hostname: bool = True,
) -> TlsOptions:
    """Collect the TLS options; fill in `tdwii pki init`'s layout and check the files exist."""
    if mtls and tls:
        raise TdwiiError("--mtls and --tls exclude each other", hint="pick one")
    given = bool(ca or cert or key)
    mode: Literal["off", "tls", "mtls"] = "mtls" if mtls else "tls" if tls else "off"
    if mode == "off":
        if given:
            raise TdwiiError(
                "certificate options given without --mtls or --tls",
                hint="add --mtls (mutual TLS) or --tls (server authentication only)",
            )
        return TlsOptions(role=role, profile=tls_profile)
    defaults: list[str] = []
    cas = tuple(ca or ())
    if not cas:
        cas = (DEFAULT_CA,)
        defaults.append("ca")
    node = DEFAULT_NODE[role]
    opts_needs_cert = role == "server" or mode == "mtls"
    if opts_needs_cert:
        if cert is None:
            cert = node.with_suffix(".pem")
            defaults.append("cert")
        if key is None:
            key = node.with_suffix(".key")
            defaults.append("key")
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
        defaults_used=tuple(defaults),
    )


def _params() -> list:
    return [
        param(
            "mtls",
            Annotated[
                bool,
                typer.Option(
                    "--mtls",
                    "-mtls",
                    help="Mutual TLS: both sides present and verify certificates.",
                    rich_help_panel=PANEL,
                ),
            ],
            False,
        ),
        param(
            "tls",
            Annotated[
                bool,
                typer.Option(
                    "--tls",
                    help="TLS with server authentication only (no client certificate).",
                    rich_help_panel=PANEL,
                ),
            ],
            False,
        ),
        param(
            "ca",
            Annotated[
                list[Path] | None,
                typer.Option(
                    "--ca",
                    "-ca",
                    metavar="FILE",
                    help="Trusted CA(s), PEM, repeatable [default: certs/rootCA/rootCA.pem].",
                    rich_help_panel=PANEL,
                ),
            ],
            None,
        ),
        param(
            "cert",
            Annotated[
                Path | None,
                typer.Option(
                    "--cert",
                    "-cert",
                    metavar="FILE",
                    help="Our certificate, PEM (chain allowed).",
                    rich_help_panel=PANEL,
                ),
            ],
            None,
        ),
        param(
            "key",
            Annotated[
                Path | None,
                typer.Option(
                    "--key",
                    "-key",
                    metavar="FILE",
                    help="Our private key, PEM.",
                    rich_help_panel=PANEL,
                ),
            ],
            None,
        ),
        param(
            "key_password_file",
            Annotated[
                Path | None,
                typer.Option(
                    "--key-password-file",
                    metavar="FILE",
                    help="File whose first line is the private key's password.",
                    rich_help_panel=PANEL,
                ),
            ],
            None,
        ),
        param(
            "tls_profile",
            Annotated[
                Literal["bcp195-rfc8996", "bcp195-nd", "bcp195-ex"],
                typer.Option(
                    "--tls-profile",
                    help="Secure transport profile (PS3.15 Annex B): TLS versions and suites.",
                    rich_help_panel=PANEL,
                ),
            ],
            "bcp195-rfc8996",
        ),
        param(
            "crl",
            Annotated[
                Path | None,
                typer.Option(
                    "--crl",
                    metavar="FILE",
                    help="Refuse peers whose certificate this CRL revokes.",
                    rich_help_panel=PANEL,
                ),
            ],
            None,
        ),
        param(
            "verify_hostname",
            Annotated[
                bool,
                typer.Option(
                    "--verify-hostname/--no-verify-hostname",
                    help="Clients: check the server's host name against its certificate.",
                    rich_help_panel=PANEL,
                ),
            ],
            True,
        ),
    ]


def tls_options(role: Role):  # type: ignore[no-untyped-def]
    """Decorator: the command gets `tls: TlsOptions` resolved for `role`."""
    return option_group("tls", _params(), lambda **kw: resolve(role, **kw))


def tls_option_values(role: Role):  # type: ignore[no-untyped-def]
    """Decorator: the same TLS option group, but the command gets the raw values (a dict
    for `resolve(role, **values)`), for commands that merge a configuration file first."""
    del role  # same options for both roles; kept for symmetry with `tls_options`
    return option_group("tls", _params(), lambda **kw: dict(kw))
