"""The TLS option group shared by serve, create-workitem and echo (declared once, here).

The options are collected into `tdwii_cli.tls.options.TlsOptions` by its `resolve()`.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Annotated

import typer

from tdwii_cli.cli.options.groups import Decorator, option_group, param
from tdwii_cli.tls.options import DEFAULT_PROFILE, ProfileName, Role, resolve

PANEL = "TLS"


def _params() -> list[inspect.Parameter]:
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
                ProfileName,
                typer.Option(
                    "--tls-profile",
                    help=(
                        "Secure transport profile (PS3.15 Annex B). bcp195-rfc8996 (default): "
                        "TLS 1.2 and 1.3, suites for RSA and EC keys. bcp195-nd: TLS 1.2 and "
                        "1.3, TLS 1.2 suites for RSA keys only (a server with an EC key then "
                        "takes TLS 1.3 clients only). bcp195-ex: TLS 1.2 only, RSA and EC."
                    ),
                    rich_help_panel=PANEL,
                ),
            ],
            DEFAULT_PROFILE,
        ),
        param(
            "crl",
            Annotated[
                Path | None,
                typer.Option(
                    "--crl",
                    metavar="FILE",
                    help=(
                        "Refuse peers whose certificate this CRL revokes [servers with --mtls: "
                        "the CRL next to the CA (rootCA.crl.pem), when there is one]. "
                        "Reread when the file changes."
                    ),
                    rich_help_panel=PANEL,
                ),
            ],
            None,
        ),
        param(
            "no_crl",
            Annotated[
                bool,
                typer.Option(
                    "--no-crl",
                    help="Servers: do not check revocation, not even with the CA's own CRL.",
                    rich_help_panel=PANEL,
                ),
            ],
            False,
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


def tls_options(role: Role) -> Decorator:
    """Decorator: the command gets `tls: TlsOptions` resolved for `role`."""
    return option_group("tls", _params(), lambda **kw: resolve(role, **kw))


def tls_option_values() -> Decorator:
    """Decorator: the same TLS option group, but the command gets the raw values (a dict
    for `resolve(role, **values)`), for commands that merge a configuration file first."""
    return option_group("tls", _params(), lambda **kw: dict(kw))
