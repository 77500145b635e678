"""How `tdwii ups` shows a workitem and result lines on stdout: an indented tree (rich on a
terminal, plain when piped) and lines flushed one by one. Text from the peer is shown
escaped, on its own line (`tdwii_cli.text.one_line`), never read as rich markup.
(`ups find`'s streaming table, lines and JSON are in `matches`.)"""

import sys
from typing import TYPE_CHECKING

from tdwii_cli.text import one_line

if TYPE_CHECKING:
    from pydicom.dataset import Dataset


def tree_lines(ds: "Dataset", depth: int = 0) -> list[str]:
    """`(gggg,eeee) Name  VR  value`, a sequence's items indented under it."""
    pad = "  " * depth
    lines = []
    for elem in ds:
        tag = f"({elem.tag.group:04X},{elem.tag.element:04X})"
        name = one_line(elem.name)
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
        lines.append(f"{pad}{tag} {name}  {elem.VR}  {one_line(text)}")
    return lines


def print_tree(ds: "Dataset", title: str) -> None:
    """The workitem as a tree (rich on a terminal)."""
    lines = tree_lines(ds)
    if sys.stdout.isatty():
        from rich.panel import Panel
        from rich.text import Text

        from tdwii_cli.cli.console import stdout_console

        stdout_console().print(Panel(Text("\n".join(lines)), title=Text(one_line(title))))
    else:
        sys.stdout.write(one_line(title) + "\n" + "\n".join(lines) + "\n")
        sys.stdout.flush()


def print_line(text: str) -> None:
    """One result line on stdout (flushed: `watch` and `deliver` lines come one by one);
    a control character in it, whoever put it there, is shown as an escape."""
    sys.stdout.write(one_line(text) + "\n")
    sys.stdout.flush()
