"""Reading an outbox without write access: another user's files, or a read-only mount.

SQLite reads a WAL-mode file through its ``-shm`` index. Opened ``mode=ro``, it can use a
``-shm`` it may only read (it then builds its own index from the ``-wal``, which stays correct
beside a live writer), but it cannot make a missing one in a directory it may not write. It
then refuses the file, although there is nothing to index: a ``-shm`` is missing only when no
connection is open (every live connection keeps both ``-wal`` and ``-shm``) and the last one to
close folded the ``-wal`` into the file. Only then is ``immutable=1`` safe: it reads the file
alone, ignoring any ``-wal``, and takes no locks. A writer that starts while such a reader
looks is not seen: the reader sees the file as it was when it opened.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from .errors import OutboxError

__all__ = ["can_write", "uri", "unreadable_wal", "write_refused"]

_EFFECTIVE = os.access in os.supports_effective_ids


def _access(path: str | os.PathLike[str], mode: int) -> bool:
    return os.access(path, mode, effective_ids=_EFFECTIVE)


def can_write(path: Path) -> bool:
    """Whether this process may write the SQLite file at ``path``, its ``-wal`` and ``-shm`` too."""
    if not _access(path, os.W_OK):
        return False
    if _access(path.parent, os.W_OK):
        return True
    return all(_access(f"{path}{suffix}", os.W_OK) for suffix in ("-wal", "-shm"))


def uri(path: Path) -> str:
    """Return a URI that opens ``path`` read-only: ``immutable`` only where no connection is live."""
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    try:
        live = shm.exists() or wal.stat().st_size > 0
    except FileNotFoundError:
        live = False
    return f"file:{quote(os.path.abspath(path))}?mode=ro{'' if live else '&immutable=1'}"


def unreadable_wal(path: Path) -> OutboxError | None:
    """Return the error for a ``-wal`` holding events beside no ``-shm`` that could be made, else None."""
    wal, shm = Path(f"{path}-wal"), Path(f"{path}-shm")
    try:
        stranded = wal.stat().st_size > 0 and not shm.exists() and not _access(path.parent, os.W_OK)
    except FileNotFoundError:
        return None
    if not stranded:
        return None
    return OutboxError(
        f"cannot read outbox {path}: its {wal.name} holds events, and reading them needs {shm.name},"
        f" which cannot be created here ({_why_not(path.parent)}); open it once with write access"
    )


def write_refused(*paths: Path) -> OutboxError | None:
    """Return the error for the first of ``paths`` this process may not write, naming it; else None."""
    for path in paths:
        try:
            fd = os.open(path, os.O_WRONLY)  # no O_TRUNC, no O_CREAT: changes nothing
        except FileNotFoundError:
            if not _access(path.parent, os.W_OK):
                return OutboxError(f"cannot create {path}: {_why_not(path.parent)}")
            continue
        except OSError as exc:
            return OutboxError(f"cannot open {path} for writing: {(exc.strerror or str(exc)).lower()}")
        os.close(fd)
        if not can_write(path):  # the file, but not its -wal/-shm beside it
            return OutboxError(f"cannot create {path}-wal or {path}-shm: {_why_not(path.parent)}")
    return None


def _why_not(directory: Path) -> str:
    try:
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return "read-only file system"
    except OSError:
        pass
    return "permission denied"
