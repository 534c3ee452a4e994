"""The outbox's error tree: one root, a few named leaves.

Every error raised by this package is an :class:`OutboxError`; SQLite's own exceptions are
translated at the point where they happen, so callers never need to import ``sqlite3``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "disk_is_full",
    "OutboxError",
    "PayloadError",
    "OutboxFullError",
    "OutboxClosedError",
    "OutboxCorruptError",
    "OutboxTextError",
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


class OutboxTextError(OutboxCorruptError):
    """An event's text in the outbox file is not valid UTF-8 (a byte gone bad on disk, or a
    tool that wrote bytes): Python's sqlite3 refuses to read the row. The shipper sets such
    events aside (``OutboxReader.set_aside_unreadable``) and reads on."""


_SQLITE_FULL, _SQLITE_IOERR = 13, 10
_SQLITE_IOERR_SHMSIZE = _SQLITE_IOERR | (19 << 8)  # the -shm could not grow: no room on its disk
_NEARLY_FULL = 64 * 1024  # below this free, an I/O error on the disk is the disk being full


def disk_is_full(exc: BaseException, path: str | os.PathLike[str]) -> bool:
    """True if a sqlite3 error means the disk holding ``path`` has no room.

    ``SQLITE_FULL`` says so itself; so does ``SQLITE_IOERR_SHMSIZE`` (the ``-shm`` failed to
    grow). Other extended I/O errors (a write, an fsync, a truncate) say only "disk I/O error":
    they count as full when the filesystem has next to nothing left.
    """
    code = getattr(exc, "sqlite_errorcode", None)
    if not isinstance(code, int):
        return False
    if code & 0xFF == _SQLITE_FULL or code == _SQLITE_IOERR_SHMSIZE:
        return True
    if code & 0xFF != _SQLITE_IOERR:
        return False
    try:
        st = os.statvfs(Path(path).parent)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < _NEARLY_FULL
