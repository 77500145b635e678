"""`tdwii echo` (not built yet)."""

from __future__ import annotations

from tdwii_cli.errors import TdwiiError


def echo() -> None:
    """Not built yet."""
    raise TdwiiError("`tdwii echo` is not built yet")
