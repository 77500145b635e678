"""Syslog framing of audit messages: RFC 5424 messages, RFC 5425 octet counting.

PS3.15 A.6/A.7: facility 10 (security/authorization), severity 5 (notice) for most
messages and 4 (warning) for alerts that call for attention, so PRI is "<85>" or
"<84>"; MSGID "DICOM+RFC3881"; the MSG part is the XML audit message in UTF-8, after
the byte order mark RFC 5424 asks for (MSG-UTF8). A file destination keeps one such
message per line.
"""

from __future__ import annotations

import datetime as dt
import functools
import re

FACILITY = 10  # security/authorization messages
NOTICE, WARNING = 5, 4
MSGID = "DICOM+RFC3881"
APP_NAME = "tdwii"
BOM = b"\xef\xbb\xbf"
_ZERO = dt.timedelta(0)
_NOT_PRINTUSASCII = re.compile(r"[^\x21-\x7e]")


@functools.lru_cache(maxsize=64)  # a host name and a process ID: the same every time
def header_field(value: str, limit: int) -> str:
    """`value` as an RFC 5424 header field: printable US-ASCII without spaces, at most
    `limit` characters ('-', the nil value, when nothing is left)."""
    text = _NOT_PRINTUSASCII.sub("_", value)[:limit]
    return text or "-"


def timestamp(when: dt.datetime) -> str:
    """RFC 5424 TIMESTAMP: UTC with microseconds and a Z."""
    if when.utcoffset() != _ZERO:
        when = when.astimezone(dt.timezone.utc)
    return when.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def message(
    xml: str,
    *,
    when: dt.datetime,
    hostname: str,
    procid: str,
    severity: int = NOTICE,
) -> bytes:
    """One RFC 5424 SYSLOG-MSG carrying `xml` (no structured data)."""
    head = (
        f"<{FACILITY * 8 + severity}>1 {timestamp(when)} {header_field(hostname, 255)} "
        f"{APP_NAME} {header_field(procid, 128)} {MSGID} -"
    )
    return head.encode("ascii") + b" " + BOM + xml.encode("utf-8")


def octet_counted(msg: bytes) -> bytes:
    """RFC 5425 framing: MSG-LEN SP SYSLOG-MSG."""
    return b"%d " % len(msg) + msg
