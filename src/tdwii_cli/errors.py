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


class Interrupted(BaseException):
    """Ctrl-C: the command stops where it is (what is open is aborted on the way out) and
    exits 130 with `message`. A `BaseException`, like `KeyboardInterrupt`, so that no
    `except Exception` takes it for a failure to handle; unlike it, typer and click pass it
    through to the application, which prints the one line."""

    exit_code = exitcodes.INTERRUPTED

    def __init__(self, message: str = "interrupted (Ctrl-C)") -> None:
        super().__init__(message)
        self.message = message
