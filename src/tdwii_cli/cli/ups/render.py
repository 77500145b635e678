"""How `tdwii ups` shows results on stdout: a worklist table that grows as matches stream
(rich on a terminal, aligned text when piped, so a script reads it and no rich import is
paid), a workitem as an indented tree, and the DICOM JSON model."""

import json
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from tdwii_cli.ups.worklist import Match

COLUMNS = (
    ("uid", "SOP Instance UID", 0),
    ("state", "state", 11),
    ("patient", "patient", 24),
    ("label", "label", 20),
    ("station", "station", 10),
    ("scheduled", "scheduled", 14),
    ("priority", "priority", 8),
    ("readiness", "readiness", 10),
)


class WorklistTable:
    """Rows printed as they arrive; the header comes with the first row, or at `close()`
    when the query ended without one (a query that failed prints nothing here)."""

    def __init__(self) -> None:
        self.rows = 0
        self._live: Any = None
        self._table: Any = None
        self._begun = False
        self._widths = [max(width, len(title)) for _key, title, width in COLUMNS]
        self._widths[0] = 64

    def _begin(self) -> None:
        self._begun = True
        if sys.stdout.isatty():
            from rich.live import Live
            from rich.table import Table

            from tdwii_cli.cli.console import stdout_console

            self._table = Table()
            for _key, title, _width in COLUMNS:
                self._table.add_column(title, overflow="fold")
            self._live = Live(self._table, console=stdout_console(), auto_refresh=False)
            self._live.start()
        else:
            self._write([title for _key, title, _width in COLUMNS])

    def _write(self, cells: list[str]) -> None:
        text = "  ".join(c.ljust(w) for c, w in zip(cells[:-1], self._widths, strict=False))
        sys.stdout.write(f"{text}  {cells[-1]}\n".rstrip() + "\n")
        sys.stdout.flush()

    def add(self, match: "Match") -> None:
        if not self._begun:
            self._begin()
        self.rows += 1
        row = match.to_row()
        cells = [_printable(row[key]) or "-" for key, _title, _width in COLUMNS]
        if self._live is not None:
            from rich.markup import escape

            self._table.add_row(*(escape(c) for c in cells))
            self._live.refresh()
        else:
            self._write(cells)

    def close(self, completed: bool = True) -> None:
        """End the table (an empty one is shown when the query `completed` with no row)."""
        if completed and not self._begun:
            self._begin()
        if self._live is not None:
            self._live.stop()


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


def dicom_json(datasets: "list[Dataset]") -> str:
    """The DICOM JSON model (PS3.18 F.2) of `datasets`, as a JSON array."""
    return json.dumps([ds.to_json_dict() for ds in datasets], indent=2)


def tree_lines(ds: "Dataset", depth: int = 0) -> list[str]:
    """`(gggg,eeee) Name  VR  value`, a sequence's items indented under it."""
    pad = "  " * depth
    lines = []
    for elem in ds:
        tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
        name = elem.name
        if elem.VR == "SQ":
            lines.append(f"{pad}{tag} {name}  SQ  {len(elem.value)} item(s)")
            for i, item in enumerate(elem.value, start=1):
                lines.append(f"{pad}  item {i}")
                lines.extend(tree_lines(item, depth + 2))
            continue
        value = elem.value
        if isinstance(value, bytes):
            text = f"<{len(value)} bytes>"
        elif elem.VM > 1:
            text = "\\".join(str(v) for v in value)
        else:
            text = "" if value is None else str(value)
        lines.append(f"{pad}{tag} {name}  {elem.VR}  {_printable(text)}")
    return lines


def print_tree(ds: "Dataset", title: str) -> None:
    """The workitem as a tree (rich on a terminal)."""
    lines = tree_lines(ds)
    if sys.stdout.isatty():
        from rich.markup import escape
        from rich.panel import Panel

        from tdwii_cli.cli.console import stdout_console

        stdout_console().print(Panel(escape("\n".join(lines)), title=escape(title)))
    else:
        sys.stdout.write(title + "\n" + "\n".join(lines) + "\n")
        sys.stdout.flush()


def print_line(text: str) -> None:
    """One result line on stdout (flushed: `watch` and `deliver` lines come one by one)."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
