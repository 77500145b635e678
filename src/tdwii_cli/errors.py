"""The base of every tdwii error: a one-line message, the exit code, and maybe a hint."""

from __future__ import annotations

from tdwii_cli import exitcodes


class TdwiiError(Exception):
    """A failure the user can act on: printed as one line, then exit with `exit_code`."""

    def __init__(self, message: str, exit_code: int = exitcodes.ERROR, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
