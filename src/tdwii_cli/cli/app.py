"""The `tdwii` typer application: wires the subcommands, exit codes and error style."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer

from tdwii_cli import __version__, exitcodes
from tdwii_cli.cli.console import is_debug, report_error
from tdwii_cli.errors import TdwiiError


class _App(typer.Typer):
    """Typer that turns a `TdwiiError` (or any crash) into one line and an exit code."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except TdwiiError as exc:
            from tdwii_cli.cli.hints import hint_for

            report_error(exc.message, hint_for(exc))
            sys.exit(exc.exit_code)
        except Exception as exc:  # a bug or an unforeseen failure: still one line
            if is_debug():
                raise
            report_error(f"unexpected {type(exc).__name__}: {exc}", "run again with -d for details")
            sys.exit(exitcodes.ERROR)


app = _App(
    name="tdwii",
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


def _register() -> None:
    from tdwii_cli.cli import create_workitem, echo, pki, serve

    app.command("serve", epilog=exitcodes.HELP)(serve.serve)
    app.command("create-workitem", epilog=exitcodes.HELP)(create_workitem.create_workitem)
    app.command("echo", epilog=exitcodes.HELP)(echo.echo)
    app.add_typer(pki.app, name="pki")


_register()
