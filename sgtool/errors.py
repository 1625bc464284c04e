"""What the user sees when their input is wrong: one sentence, a hint, exit code 2."""
from __future__ import annotations

EXIT_USER_ERROR = 2


class SgtoolError(Exception):
    """An error caused by the user's input or environment, shown without a traceback."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} Hint: {self.hint}"
