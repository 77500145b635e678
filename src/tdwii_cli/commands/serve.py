"""`tdwii serve` (not built yet)."""

from __future__ import annotations

from tdwii_cli.errors import TdwiiError


def serve() -> None:
    """Not built yet."""
    raise TdwiiError("`tdwii serve` is not built yet")
