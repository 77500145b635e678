"""The association option group shared by the client commands (echo, create-workitem)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import typer

from tdwii_cli.optgroups import option_group, param

PANEL = "Association"


@dataclass(frozen=True)
class ScuOptions:
    """Our and the peer's AE titles and the DCMTK-style timeouts (seconds)."""

    calling_aet: str = "TDWII"
    called_aet: str = "ANY-SCP"
    connect_timeout: float = 10.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 30.0
    network_timeout: float = 60.0


def check_ae_title(value: str) -> str:
    """An AE title as DICOM allows it (PS3.5 AE: 1-16 ASCII characters, no backslash or control
    characters, not only spaces); `typer.BadParameter` (exit 2) otherwise."""
    title = value.strip(" ")
    if not title:
        raise typer.BadParameter("an AE title needs at least one character other than space")
    if len(value) > 16:
        raise typer.BadParameter(f"{value!r} is longer than 16 characters")
    if not value.isascii() or "\\" in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise typer.BadParameter(f"{value!r}: only printable ASCII without a backslash")
    return title


def _opt(names: tuple[str, ...], help_: str) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help_, rich_help_panel=PANEL, callback=check_ae_title)


def _timeout(names: tuple[str, ...], help_: str) -> typer.models.OptionInfo:
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
    ],
    ScuOptions,
)
"""Decorator: the command gets `net: ScuOptions`."""
