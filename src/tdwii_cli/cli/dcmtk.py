"""DCMTK's command-line tools, told apart from pynetdicom's Python scripts of the same names
(`echoscu`, `storescp`, ...), which a venv's `bin` often puts first in PATH."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TELL_APART", "dcmtk_tool"]

# where DCMTK's packages put its tools, looked at after PATH
_USUAL = ("/usr/bin", "/usr/local/bin", "/opt/homebrew/bin", "/opt/local/bin")
TELL_APART = (
    "DCMTK's prints '$dcmtk: NAME v3...' for `NAME --version`; pynetdicom's is a Python script"
)


def _is_program(path: Path) -> bool:
    """An executable file that is no script (pynetdicom's tools and pyenv's shims start #!)."""
    try:
        if not (path.is_file() and os.access(path, os.X_OK)):
            return False
        with path.open("rb") as fh:
            return fh.read(2) != b"#!"
    except OSError:
        return False


def dcmtk_tool(
    name: str, search_path: str | None = None, usual: tuple[str, ...] = _USUAL
) -> Path | None:
    """The path of DCMTK's `name` (a compiled program in `search_path`, default PATH, or in
    one of the `usual` folders), or None."""
    path = search_path if search_path is not None else os.environ.get("PATH", "")
    for folder in [*path.split(os.pathsep), *usual]:
        if folder and _is_program(Path(folder) / name):
            return Path(folder) / name
    return None
