"""The outbox's error tree: one root, a few named leaves.

Every error raised by this package is an :class:`OutboxError`; SQLite's own exceptions are
translated at the point where they happen, so callers never need to import ``sqlite3``.
"""

from __future__ import annotations

__all__ = [
    "OutboxError",
    "PayloadError",
    "OutboxFullError",
    "OutboxClosedError",
    "OutboxCorruptError",
    "NotAnOutboxError",
]


class OutboxError(Exception):
    """Something went wrong with the outbox."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())


class PayloadError(OutboxError, ValueError):
    """The event was refused before anything was written."""


class OutboxFullError(OutboxError):
    """Appending would take the outbox past its ``max_bytes`` limit."""


class OutboxClosedError(OutboxError):
    """The outbox is closed."""


class NotAnOutboxError(OutboxError):
    """The file exists but is not an outbox."""


class OutboxCorruptError(OutboxError):
    """The outbox file is damaged and cannot be read safely."""
