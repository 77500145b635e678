"""Value rules of PS3.5 that tdwii checks: DT (parse, check, normalise, format, now),
AE titles and UIDs. Pure functions, no pydicom."""

from __future__ import annotations

import re
from datetime import datetime

from tdwii_cli.clock import local_now

# YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]
_DT = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,6}))?([+-]\d{4})?$")
_UID = re.compile(r"^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$")
MAX_UID_LENGTH = 64
MAX_AE_TITLE_LENGTH = 16


def dt_parts(value: object) -> tuple[str | None, ...] | None:
    """(year, month, day, hour, minute, second, fraction, offset) of a DT, or None."""
    match = _DT.match(str(value or "").strip())
    return match.groups() if match else None


def valid_dt(value: object) -> bool:
    """True when `value` is a well-formed DICOM DT: components only after every coarser
    one, a real calendar date and time (a leap second allowed), an offset within +-14 h."""
    parts = dt_parts(value)
    if parts is None:
        return False
    year, month, day, hour, minute, second, fraction, offset = parts
    seen_gap = False
    for part in (month, day, hour, minute, second, fraction):
        if part is None:
            seen_gap = True
        elif seen_gap:
            return False
    try:
        datetime(
            int(year or 0),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            min(int(second or 0), 59),
        )
    except ValueError:
        return False
    if second is not None and int(second) > 60:
        return False
    return offset is None or (int(offset[1:3]) <= 14 and int(offset[3:5]) <= 59)


def normalise_dt(value: object) -> str:
    """A DT as fixed-width sortable text 'YYYYMMDDHHMMSS.ffffff' ('' if empty or malformed).

    Missing components take their lowest value (month and day 01, time 00); a UTC
    offset is dropped (times compare as written).
    """
    parts = dt_parts(value)
    if parts is None:
        return ""
    year, month, day, hour, minute, second, fraction, _offset = parts
    return (
        f"{year}{month or '01'}{day or '01'}{hour or '00'}{minute or '00'}{second or '00'}"
        f".{(fraction or '').ljust(6, '0')}"
    )


def upper_dt(value: object) -> str:
    """The last instant of the period a (partial) DT names, normalised like `normalise_dt`."""
    parts = dt_parts(value)
    if parts is None:
        return ""
    year, month, day, hour, minute, second, fraction, _offset = parts
    month = month or "12"
    if day is None:
        import calendar

        try:
            day = f"{calendar.monthrange(int(year or 0), int(month))[1]:02d}"
        except ValueError:
            day = "31"
    return (
        f"{year}{month}{day}{hour or '23'}{minute or '59'}{second or '59'}"
        f".{(fraction or '').ljust(6, '9')}"
    )


def format_dt(value: datetime) -> str:
    """A DICOM DT YYYYMMDDHHMMSS (with the UTC offset when `value` is aware)."""
    text = value.strftime("%Y%m%d%H%M%S")
    if value.tzinfo is not None:
        text += value.strftime("%z")
    return text


def now_dt() -> str:
    """Now as a DICOM DT in local time, with microseconds and the UTC offset."""
    return local_now().strftime("%Y%m%d%H%M%S.%f%z")


def ae_title_problem(value: str) -> str | None:
    """Why `value` is not an AE title (PS3.5 AE: 1-16 characters of printable ASCII, no
    backslash, not only spaces), or None when it is one."""
    if not value.strip(" "):
        return "an AE title needs at least one character other than space"
    if len(value) > MAX_AE_TITLE_LENGTH:
        return f"{value!r} is longer than {MAX_AE_TITLE_LENGTH} characters"
    if not value.isascii() or "\\" in value or any(ord(c) < 32 or ord(c) == 127 for c in value):
        return f"{value!r}: only printable ASCII without a backslash"
    return None


def check_ae_title(value: str) -> str:
    """`value` as an AE title without its padding; `ValueError` saying why it is not one."""
    problem = ae_title_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value.strip(" ")


def valid_uid(value: str) -> bool:
    """A UID: dot-separated numbers without leading zeros, at most 64 characters."""
    return len(value) <= MAX_UID_LENGTH and _UID.match(value) is not None
