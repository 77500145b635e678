"""The association option group shared by the client commands: AE titles and timeouts.

The options are collected into `tdwii_cli.net.options.ScuOptions`.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from tdwii_cli.cli.options.groups import option_group, param
from tdwii_cli.dicom.values import check_ae_title as _check
from tdwii_cli.net.options import ScuOptions

PANEL = "Association"


def check_ae_title(value: str) -> str:
    """An AE title as DICOM allows it, without its padding; `typer.BadParameter` (exit 2)."""
    try:
        return _check(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _opt(names: tuple[str, ...], help_: str) -> Any:
    return typer.Option(*names, help=help_, rich_help_panel=PANEL, callback=check_ae_title)


def _timeout(names: tuple[str, ...], help_: str) -> Any:
    return typer.Option(*names, min=0.001, metavar="S", help=help_, rich_help_panel=PANEL)


scu_options = option_group(
    "net",
    [
        param(
            "calling_aet", Annotated[str, _opt(("--calling-aet", "-aet"), "Our AE title.")], "TDWII"
        ),
        param(
            "called_aet",
            Annotated[str, _opt(("--called-aet", "-aec"), "The peer's AE title.")],
            "ANY-SCP",
        ),
        param(
            "connect_timeout",
            Annotated[
                float,
                _timeout(("--connect-timeout", "-to"), "TCP connect and TLS handshake timeout."),
            ],
            10.0,
        ),
        param(
            "acse_timeout",
            Annotated[float, _timeout(("--acse-timeout", "-ta"), "Association (ACSE) timeout.")],
            30.0,
        ),
        param(
            "dimse_timeout",
            Annotated[float, _timeout(("--dimse-timeout", "-td"), "DIMSE response timeout.")],
            30.0,
        ),
        param(
            "network_timeout",
            Annotated[float, _timeout(("--network-timeout", "-tn"), "Idle network timeout.")],
            60.0,
        ),
        param(
            "source_address",
            Annotated[
                str,
                typer.Option(
                    "--source-address",
                    "-sa",
                    metavar="ADDRESS",
                    help="Local address to connect from (a multi-homed host); default: any.",
                    rich_help_panel=PANEL,
                ),
            ],
            "",
        ),
    ],
    ScuOptions,
)
"""Decorator: the command gets `net: ScuOptions`."""
