"""The shape of the package: layers that only import downwards, and what each layer may use.

Every import in `src/tdwii_cli` (at module level or inside a function) is read
with `ast`; the rules are those of ARCHITECTURE.md.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "tdwii_cli"

# Lowest first. A module may import its own package and any lower layer; the root
# modules (errors, exitcodes, fileio, clock, the version) are below everything.
LAYERS = ["", "dicom", "pki", "tls", "access", "audit", "net", "scp", "ups", "client|server", "cli"]
RANK = {name: i for i, names in enumerate(LAYERS) for name in names.split("|")}
ONLY_IN = {
    "typer": {"cli"},
    "click": {"cli"},
    "rich": {"cli"},
    # pynetdicom is a foreign peer in the tests; in tdwii only its status tables are used
    "pynetdicom": {"dicom/status.py"},
}


def modules() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if "__pycache__" not in p.parts)


def layer_of(path: Path) -> str:
    parts = path.relative_to(SRC).parts
    return parts[0] if len(parts) > 1 else ""


def imported(path: Path) -> list[tuple[int, str]]:
    """(line, dotted module) of every import in `path`, relative imports resolved."""
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}:{node.lineno}: relative import"
            base = node.module or ""
            if base == "tdwii_cli":  # `from tdwii_cli import exitcodes`: root modules
                out += [(node.lineno, f"tdwii_cli.{a.name}") for a in node.names]
            else:
                out.append((node.lineno, base))
    return out


def test_the_layers_are_all_there() -> None:
    found = {layer_of(p) for p in modules()}
    assert found == set(RANK) - {""} | {""}, found


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_lower_layers_never_import_higher_ones(path: Path) -> None:
    if path.name == "__main__.py" and layer_of(path) == "":
        return  # `python -m tdwii_cli` is the command line's other door
    mine = layer_of(path)
    for line, name in imported(path):
        if not name.startswith("tdwii_cli.") or name == "tdwii_cli.__main__":
            continue
        parts = name.split(".")
        target = parts[1] if len(parts) > 2 or (SRC / parts[1]).is_dir() else ""
        where = f"{path.relative_to(SRC)}:{line} imports {name}"
        assert target in RANK, where
        if target == mine:
            continue
        assert RANK[target] < RANK[mine], f"{where} ({target} is not below {mine or 'root'})"


@pytest.mark.parametrize("package", sorted(ONLY_IN))
def test_only_their_layer_imports_typer_rich_and_pynetdicom(package: str) -> None:
    allowed = ONLY_IN[package]
    offenders = []
    for path in modules():
        rel = str(path.relative_to(SRC))
        if layer_of(path) in allowed or rel in allowed:
            continue
        offenders += [
            f"{rel}:{line}"
            for line, name in imported(path)
            if name == package or name.startswith(package + ".")
        ]
    assert not offenders, f"{package} imported outside {sorted(allowed)}: {offenders}"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(SRC)))
def test_every_module_says_what_it_holds(path: Path) -> None:
    tree = ast.parse(path.read_text())
    doc = ast.get_docstring(tree)
    assert doc and len(doc.splitlines()[0]) > 10, f"{path}: no first-line docstring"
    text = path.read_text().lower()
    for word in ("design.md", "../shared", "the seed", "seed's"):
        assert word not in text, f"{path.relative_to(SRC)} mentions {word!r}"
    assert not re.search(r"\bissue #?\d", text), f"{path.relative_to(SRC)} cites an issue"
