"""`tdwii ups`: the UPS client commands, the whole TDW-II loop from one tool.

One module per concern; each command is registered here, and each imports what it
needs (pydicom, rich, ...) only when it runs.
"""

import typer

from tdwii_cli import exitcodes
from tdwii_cli.cli.ups import deliver, find, get, performer, subscription, watch

app = typer.Typer(
    name="ups",
    help="UPS worklist client: find, get, claim, progress, complete, cancel, subscribe, "
    "watch, deliver.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

for name, function in (
    ("find", find.find),
    ("get", get.get),
    ("claim", performer.claim),
    ("progress", performer.progress),
    ("complete", performer.complete),
    ("cancel", performer.cancel),
    ("subscribe", subscription.subscribe),
    ("unsubscribe", subscription.unsubscribe),
    ("suspend", subscription.suspend),
    ("watch", watch.watch),
    ("deliver", deliver.deliver),
):
    app.command(name, epilog=exitcodes.HELP)(function)
