"""The one exception type that reaches a user: what went wrong and what to do about it."""

from __future__ import annotations


class DataAccessError(Exception):
    """A failure a person can act on. Holds no stack trace text and never a secret."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} {self.hint}".strip()


def redact(text: str, secrets: list[str | None]) -> str:
    """Remove every secret value from a message before it is shown or logged."""
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "***")
    return text
