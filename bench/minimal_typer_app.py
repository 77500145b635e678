"""The smallest typer app with tdwii's help style, the yardstick for `tdwii --help`.

Same constructor settings as `tdwii_cli.cli.app` (rich help, option panels, no locals in
tracebacks), two commands with options in a panel; no work at all. With
MINIMAL_PLAIN_HELP=1 in the environment it uses click's plain help instead (typer's
`rich_markup_mode=None`), the other help style tdwii could have chosen.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

app = typer.Typer(
    name="minimal",
    help="A minimal typer app.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    rich_markup_mode=None if os.environ.get("MINIMAL_PLAIN_HELP") else "rich",
)


@app.command()
def hello(
    name: Annotated[str, typer.Argument(help="Who.")],
    loud: Annotated[bool, typer.Option("--loud", help="Shout.", rich_help_panel="Style")] = False,
) -> None:
    """Say hello."""
    typer.echo(name.upper() if loud else name)


@app.command()
def bye(name: Annotated[str, typer.Argument(help="Who.")]) -> None:
    """Say goodbye."""
    typer.echo(name)


if __name__ == "__main__":
    app()
