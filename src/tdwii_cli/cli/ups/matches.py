"""How `tdwii ups find` shows matches as they stream, none of them kept: a rich table on a
terminal (at most `TABLE_ROWS` rows), aligned text lines when piped, or the DICOM JSON
model as one array, a match a line. Text from the peer is shown escaped, one line per
value (`tdwii_cli.text.one_line`), never read as rich markup."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from tdwii_cli.text import one_line

if TYPE_CHECKING:
    from tdwii_cli.ups.worklist import Match

# A person reads a table, not ten thousand rows, and rich keeps each row and redraws them
# all: past this the query is cancelled (--json, or the output piped, streams any number).
TABLE_ROWS = 1000
REFRESH = 0.1  # seconds between redraws of the table

COLUMNS = (
    ("uid", "SOP Instance UID", 64),
    ("state", "state", 11),
    ("patient", "patient", 24),
    ("label", "label", 20),
    ("station", "station", 10),
    ("scheduled", "scheduled", 14),
    ("priority", "priority", 8),
    ("readiness", "readiness", 10),
)


def _cells(match: Match) -> list[str]:
    row = match.to_row()
    return [one_line(row[key]) or "-" for key, _title, _width in COLUMNS]


class Lines:
    """Aligned text, a line per match, flushed: what a script reads (no rich import)."""

    bound = 0  # streams any number

    def __init__(self) -> None:
        self.shown = 0
        self._widths = [max(width, len(title)) for _key, title, width in COLUMNS]

    def _write(self, cells: list[str]) -> None:
        text = "  ".join(c.ljust(w) for c, w in zip(cells[:-1], self._widths, strict=False))
        sys.stdout.write(f"{text}  {cells[-1]}".rstrip() + "\n")
        sys.stdout.flush()

    def add(self, match: Match) -> None:
        if not self.shown:
            self._write([title for _key, title, _width in COLUMNS])
        self.shown += 1
        self._write(_cells(match))

    def close(self, completed: bool = True) -> None:
        """The header alone when the query `completed` without a match."""
        if completed and not self.shown:
            self._write([title for _key, title, _width in COLUMNS])


class Table:
    """A rich table that grows as matches come, redrawn at most every `REFRESH` seconds;
    the header comes with the first row, or at `close()` when the query ended without one
    (a query that failed prints nothing). Past `bound` rows it shows no more
    (`exceeded`): the command cancels the query there."""

    bound = TABLE_ROWS

    def __init__(self) -> None:
        self.shown = 0
        self.exceeded = False
        self._live: Any = None
        self._table: Any = None
        self._drawn = 0.0

    def _begin(self) -> None:
        from rich.live import Live
        from rich.table import Table as RichTable

        from tdwii_cli.cli.console import stdout_console

        self._table = RichTable()
        for _key, title, _width in COLUMNS:
            self._table.add_column(title, overflow="fold")
        self._live = Live(self._table, console=stdout_console(), auto_refresh=False)
        self._live.start()

    def add(self, match: Match) -> None:
        from rich.text import Text

        if self._live is None:
            self._begin()
        if self.shown >= self.bound:
            self.exceeded = True
            return
        self.shown += 1
        self._table.add_row(*(Text(c) for c in _cells(match)))
        now = time.monotonic()
        if now - self._drawn >= REFRESH:
            self._drawn = now
            self._live.refresh()

    def close(self, completed: bool = True) -> None:
        """The whole table, drawn once more (an empty one when the query `completed`
        without a match)."""
        if completed and self._live is None:
            self._begin()
        if self._live is not None:
            try:
                self._live.stop()
            finally:  # even when a second Ctrl-C cuts the drawing short
                self._live.console.show_cursor(True)


class JsonArray:
    """The DICOM JSON model (PS3.18 F.2) of each match, as one JSON array written as the
    matches come: `[`, a match a line, `]` at `close()` (also after an interrupt, so the
    output stays valid JSON)."""

    bound = 0

    def __init__(self) -> None:
        self.shown = 0

    def add(self, match: Match) -> None:
        import json

        from tdwii_cli.dicom import codec

        item = json.dumps(codec.decode(match.data).to_json_dict())
        sys.stdout.write(("[\n" if not self.shown else ",\n") + item)
        sys.stdout.flush()
        self.shown += 1

    def close(self, completed: bool = True) -> None:
        if self.shown:
            sys.stdout.write("\n]\n")
        elif completed:
            sys.stdout.write("[]\n")
        sys.stdout.flush()


def output(json_out: bool) -> Lines | Table | JsonArray:
    """JSON when asked; else a table on a terminal, lines when piped."""
    if json_out:
        return JsonArray()
    return Table() if sys.stdout.isatty() else Lines()
