"""Text from a peer made safe to show: one line, nothing a terminal acts on.

A peer's Error Comment, AE title, UID or data set value may hold control characters
(an ESC sequence that recolours or retitles the terminal, a newline that forges a
second line) or Unicode format characters (bidi overrides that reorder what follows).
`one_line()` shows each of those as an escape, the way Python writes it (`\\x1b`,
`\\n`, `\\u202e`), and leaves every printable character as it is: accented letters,
other scripts and the backslash (DICOM's value delimiter) too. Rich markup is the
console's business: `cli/` prints peer text as `rich.text.Text` or escaped.
"""

from __future__ import annotations

_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def one_line(text: object) -> str:
    """`text` with every character that is not printable (C0 and C1 controls, DEL, line
    and paragraph separators, bidi embeddings, overrides and isolates U+202A-U+202E and
    U+2066-U+2069, other format characters, lone surrogates) shown as an escape."""
    value = str(text)
    if value.isprintable():
        return value
    return "".join(c if c.isprintable() else _escape(c) for c in value)
