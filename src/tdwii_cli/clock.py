"""The one clock: every "now" in tdwii comes from here (UTC or local, always aware)."""

from __future__ import annotations

import datetime as dt


def utc_now() -> dt.datetime:
    """Now in UTC (aware)."""
    return dt.datetime.now(dt.timezone.utc)


def local_now() -> dt.datetime:
    """Now in local time (aware, with this machine's UTC offset)."""
    return dt.datetime.now().astimezone()


def utc_timestamp() -> str:
    """Now as ISO 8601 UTC text with microseconds (sortable; the store's timestamps)."""
    return utc_now().isoformat(timespec="microseconds")
