"""`tdwii create-workitem` (not built yet)."""

from __future__ import annotations

from tdwii_cli.errors import TdwiiError


def create_workitem() -> None:
    """Not built yet."""
    raise TdwiiError("`tdwii create-workitem` is not built yet")
