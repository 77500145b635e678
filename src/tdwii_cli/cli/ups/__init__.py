"""`tdwii ups`: the UPS client commands, the whole TDW-II loop from one tool.

One module per concern; a command's module is imported, and its options built, only
when it runs (the group's help lists them from their docstrings), and each imports
what it needs (pydicom, rich, ...) only then.
"""

from typing import ClassVar

import typer

from tdwii_cli.cli.app import LazyGroup

_M = "tdwii_cli.cli.ups."


class _UpsGroup(LazyGroup):
    lazy: ClassVar[dict[str, tuple[str, str]]] = {
        "find": (_M + "find", "find"),
        "get": (_M + "get", "get"),
        "claim": (_M + "performer", "claim"),
        "progress": (_M + "performer", "progress"),
        "complete": (_M + "performer", "complete"),
        "cancel": (_M + "performer", "cancel"),
        "subscribe": (_M + "subscription", "subscribe"),
        "unsubscribe": (_M + "subscription", "unsubscribe"),
        "suspend": (_M + "subscription", "suspend"),
        "watch": (_M + "watch", "watch"),
        "deliver": (_M + "deliver", "deliver"),
    }


app = typer.Typer(
    name="ups",
    cls=_UpsGroup,
    help="UPS worklist client: find, get, claim, progress, complete, cancel, subscribe, "
    "watch, deliver.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def ups() -> None:
    """UPS worklist client: find, get, claim, progress, complete, cancel, subscribe, watch,
    deliver."""
