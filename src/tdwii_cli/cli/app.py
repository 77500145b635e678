"""The `tdwii` typer application: the subcommands, loaded when used; exit codes; error style.

A command's module is imported, and its click command built, only when that command
runs (or help lists it), so `tdwii echo` pays for nothing but the echo.
"""

from __future__ import annotations

import importlib
import inspect
import sys
from typing import Annotated, Any, ClassVar, Optional

import click
import typer
from typer.core import TyperGroup

from tdwii_cli import __version__, exitcodes
from tdwii_cli.cli.console import is_debug, report_error
from tdwii_cli.cli.interrupts import ignore_ctrl_c, stop_on_ctrl_c
from tdwii_cli.errors import Interrupted, TdwiiError


class _App(typer.Typer):
    """Typer that turns a `TdwiiError` (or any crash) into one line and an exit code."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        stop_on_ctrl_c()
        try:
            return super().__call__(*args, **kwargs)
        except Interrupted as exc:  # Ctrl-C: typer would exit 130 without a word
            ignore_ctrl_c()
            report_error(exc.message, label="")
            sys.exit(exc.exit_code)
        except TdwiiError as exc:
            from tdwii_cli.cli.hints import hint_for

            ignore_ctrl_c()
            report_error(exc.message, hint_for(exc))
            sys.exit(exc.exit_code)
        except Exception as exc:  # a bug or an unforeseen failure: still one line
            if is_debug():
                raise
            ignore_ctrl_c()
            report_error(f"unexpected {type(exc).__name__}: {exc}", "run again with -d for details")
            sys.exit(exitcodes.ERROR)


# command name -> (module, attribute): a command function, or a Typer for a command group
COMMANDS = {
    "serve": ("tdwii_cli.cli.serve", "serve"),
    "create-workitem": ("tdwii_cli.cli.create_workitem", "create_workitem"),
    "echo": ("tdwii_cli.cli.echo", "echo"),
    "pki": ("tdwii_cli.cli.pki", "app"),
    "ups": ("tdwii_cli.cli.ups", "app"),
}


def _target(where: tuple[str, str]) -> Any:
    module_name, attribute = where
    return getattr(importlib.import_module(module_name), attribute)


def load_command(name: str, where: tuple[str, str] | None = None) -> click.Command:
    """The click command `name` (of `COMMANDS`, or at `where`), built from its module."""
    where = where or COMMANDS[name]
    target = _target(where)
    if not isinstance(target, typer.Typer):  # one command: a Typer of its own to build it
        # a command module's EPILOG (e.g. serve's INI keys) comes before the exit codes
        extra = getattr(importlib.import_module(where[0]), "EPILOG", "")
        function, target = target, typer.Typer(add_completion=False)
        epilog = f"{extra}\n\n{exitcodes.HELP}" if extra else exitcodes.HELP
        target.command(name, epilog=epilog)(function)
    command = typer.main.get_command(target)
    command.name = name
    return command


def _listed(name: str, where: tuple[str, str]) -> click.Command:
    """What a group's help lists for command `name`: its name and its own help text
    (the command function's docstring, or the group's help), without building its options."""
    target = _target(where)
    text = target.info.help if isinstance(target, typer.Typer) else inspect.getdoc(target)
    return click.Command(name, help=text)


class LazyGroup(TyperGroup):
    """A group whose subcommands (`lazy`: name -> (module, attribute)) are built on first
    use; its help lists them from their docstrings."""

    lazy: ClassVar[dict[str, tuple[str, str]]] = {}
    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = list(self.lazy)  # in this order, loaded or not
        return names + [n for n in super().list_commands(ctx) if n not in names]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            if self._listing:
                return _listed(cmd_name, self.lazy[cmd_name])
            self.commands[cmd_name] = load_command(cmd_name, self.lazy[cmd_name])
        return super().get_command(ctx, cmd_name)

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


class _LazyGroup(LazyGroup):
    """The top-level group (see `COMMANDS`)."""

    lazy = COMMANDS


app = _App(
    name="tdwii",
    cls=_LazyGroup,
    help="DICOM UPS worklist (IHE-RO TDW-II) over mutually authenticated TLS.",
    epilog=exitcodes.HELP,
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"tdwii {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        Optional[bool],  # noqa: UP045 (typer)
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = None,
) -> None:
    """DICOM UPS worklist (IHE-RO TDW-II) over mutually authenticated TLS."""
