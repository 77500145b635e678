"""Where output goes: logs on stderr (rich on a terminal, plain when piped), results on stdout.

On a terminal, a log record that carries a peer certificate (`record.certificate`,
see `tdwii_cli.net.log`) is shown as a table instead of its one-line text.
"""

from __future__ import annotations

import logging
import os
import sys
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

LOGGER_NAME = "tdwii"
log = logging.getLogger(LOGGER_NAME)
_debug = False


def is_debug() -> bool:
    """True when the user asked for `-d`/`--debug` (tracebacks may then be shown)."""
    return _debug


def stderr_is_terminal() -> bool:
    """True when stderr is an interactive terminal that may show colours."""
    return sys.stderr.isatty() and os.environ.get("TERM") != "dumb"


@cache
def stderr_console() -> Console:
    """The rich console for logs and progress (stderr)."""
    from rich.console import Console

    return Console(stderr=True, highlight=False)


@cache
def stdout_console() -> Console:
    """The rich console for results (stdout); plain and wide enough when piped."""
    from rich.console import Console

    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


class _PlainFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S")


class _OneLine(logging.Filter):
    """Every log line one line of printable text: a control character, whatever put it in
    the message (an AE title, a UID, a value a peer sent), is escaped."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.isprintable():
            from tdwii_cli.text import one_line

            record.msg, record.args = one_line(message), None
        return True


def setup_logging(level: int, debug: bool = False) -> None:
    """Route the `tdwii` and `pynetdicom` loggers to stderr at `level` (pynetdicom: -d only)."""
    global _debug
    _debug = debug
    handler: logging.Handler
    if stderr_is_terminal():
        handler = _FirstRecordHandler()
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_PlainFormatter())
    handler.addFilter(_OneLine())
    for name in (LOGGER_NAME, "pynetdicom"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.propagate = False
    log.setLevel(level)
    # pynetdicom's own lines (and their tracebacks) repeat what tdwii's log already says in
    # plain words; they are shown with -d only.
    logging.getLogger("pynetdicom").setLevel(logging.INFO if debug else logging.CRITICAL + 1)


class _FirstRecordHandler(logging.Handler):
    """Stands for the rich handler until a record comes: a quiet run never imports rich."""

    def __init__(self) -> None:
        super().__init__()
        self._target: logging.Handler | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self._target is None:
            self._target = _rich_handler(
                console=stderr_console(),
                show_path=False,
                markup=False,
                rich_tracebacks=False,
                log_time_format="%H:%M:%S",
            )
        self._target.handle(record)


def _rich_handler(**kwargs: object) -> logging.Handler:
    """A RichHandler that renders records carrying a certificate as its table."""
    from rich.logging import RichHandler

    class _TableHandler(RichHandler):
        def render_message(self, record: logging.LogRecord, message: str):  # type: ignore[no-untyped-def]
            info = getattr(record, "certificate", None)
            if info is None:
                return super().render_message(record, message)
            from tdwii_cli.cli.certtable import cert_table

            return cert_table(info, title=getattr(record, "title", None))

    return _TableHandler(**kwargs)  # type: ignore[arg-type]


def report_error(message: str, hint: str = "", *, label: str = "error") -> None:
    """Print one line on stderr (no traceback): `tdwii: error: MESSAGE — HINT`. Whatever a
    peer put in it is one line there: a control character is shown as an escape."""
    from tdwii_cli.text import one_line

    text = f"tdwii: {label}: {message}" if label else f"tdwii: {message}"
    if hint:
        text += f" — {hint}"
    text = one_line(text)
    if stderr_is_terminal():
        from rich.text import Text

        stderr_console().print(Text(text, style="bold red"), soft_wrap=True)
    else:
        print(text, file=sys.stderr, flush=True)
