"""The log option group shared by every subcommand: -q, -v, -d/--debug, --log-level."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Literal

import typer

from tdwii_cli.cli.console import setup_logging
from tdwii_cli.cli.options.groups import option_group, param

_LEVELS = {"critical": 50, "error": 40, "warning": 30, "info": 20, "debug": 10}


@dataclass(frozen=True)
class LogOptions:
    """The chosen verbosity; `level` is a `logging` level number."""

    level: int
    debug: bool


def _build(
    quiet: bool = False, verbose: bool = False, debug: bool = False, log_level: str | None = None
) -> LogOptions:
    if log_level:
        level = _LEVELS[log_level.lower()]
    elif debug:
        level = logging.DEBUG
    elif verbose:
        level = logging.INFO
    elif quiet:
        level = logging.ERROR
    else:
        level = logging.WARNING
    opts = LogOptions(level=level, debug=debug or level <= logging.DEBUG)
    setup_logging(opts.level, opts.debug)
    return opts


log_options = option_group(
    "log",
    [
        param(
            "quiet",
            Annotated[
                bool, typer.Option("--quiet", "-q", help="Errors only.", rich_help_panel="Logging")
            ],
            False,
        ),
        param(
            "verbose",
            Annotated[
                bool,
                typer.Option(
                    "--verbose",
                    "-v",
                    help="Show connections, handshakes, associations and DIMSE messages.",
                    rich_help_panel="Logging",
                ),
            ],
            False,
        ),
        param(
            "debug",
            Annotated[
                bool,
                typer.Option(
                    "--debug",
                    "-d",
                    help="Everything, full certificates, pynetdicom's messages, tracebacks.",
                    rich_help_panel="Logging",
                ),
            ],
            False,
        ),
        param(
            "log_level",
            Annotated[
                Literal["critical", "error", "warning", "info", "debug"] | None,
                typer.Option(
                    "--log-level",
                    help="critical, error, warning (default), info or debug.",
                    case_sensitive=False,
                    rich_help_panel="Logging",
                ),
            ],
            None,
        ),
    ],
    _build,
)
"""Decorator: the command gets `log: LogOptions`; logging is set up before it runs."""
