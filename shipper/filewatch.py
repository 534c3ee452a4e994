"""Knowing, without looking, that another process wrote to the outbox (Linux's inotify).

An in-process shipper is woken by its own outbox's appends, but another process may write the
same file too (a second bot process, ``outbox import``, ``outbox replay``), and only a look finds
those. So the loop used to look every ``flush_interval`` (20 times a second) all day long. On a
shared VM one wake of an idle process costs ~0.3-0.5 ms of CPU (measured here: an asyncio loop
that only sleeps 50 ms at a time spends ~0.29 ms a wake, ~0.45 ms with the look), so those looks
were ~10 ms of CPU a second, ~10 us of every command at 1,000 commands/s.

A watch on the file's write-ahead log tells instead: every writer appends its frames there with
``write()``, which inotify reports. The watch only says that something changed (the loop reads
to see what), and a commit becomes visible a moment after its last frame is written (the
shared-memory index is updated after the write, and after an fsync under ``durability="power"``),
so :class:`shipper.wakeup.Wakeup` keeps looking every ``flush_interval`` for a few looks after
any change and relies on the watch only once the file has been still for those looks.

On systems without inotify (macOS, Windows), where the file has no WAL yet, or once the WAL is
deleted or moved, :func:`watch` returns None or the watch reports itself lost, and the loop
polls as before.
"""

from __future__ import annotations

import ctypes
import logging
import os
import struct
import sys
from pathlib import Path

__all__ = ["FileWatch", "watch"]

log = logging.getLogger("shipper.loop")

_IN_MODIFY = 0x00000002
_IN_ATTRIB = 0x00000004
_IN_DELETE_SELF = 0x00000400
_IN_MOVE_SELF = 0x00000800
_IN_IGNORED = 0x00008000
_GONE = _IN_DELETE_SELF | _IN_MOVE_SELF | _IN_IGNORED
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then len bytes of name)


class FileWatch:
    """An inotify descriptor watching one file for writes; :meth:`changed` says if any came."""

    def __init__(self, fd: int, path: Path) -> None:
        self._fd = fd
        self.path = path
        self.lost = False
        """True once the file was deleted or moved (the watch then ends: poll instead)."""

    def fileno(self) -> int:
        return self._fd

    def changed(self) -> bool:
        """True if the file was written (or the watch lost) since the last call; reads the events
        queued so far without waiting."""
        if self._fd < 0:
            return False
        any_event = False
        while True:
            try:
                data = os.read(self._fd, 4096)
            except BlockingIOError:
                return any_event
            except OSError:
                self.lost = True
                return True
            if not data:
                return any_event
            any_event = True
            offset = 0
            while offset + _HEADER.size <= len(data):
                _wd, mask, _cookie, size = _HEADER.unpack_from(data, offset)
                offset += _HEADER.size + size
                if mask & _GONE:  # any other event, a queue overflow included, is only a change
                    self.lost = True

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)


def watch(path: Path) -> FileWatch | None:
    """Watch ``path`` for writes; None where that cannot be done (no inotify, no such file)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        init, add = libc.inotify_init1, libc.inotify_add_watch
    except (OSError, AttributeError):
        return None
    add.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    fd = init(os.O_NONBLOCK | os.O_CLOEXEC)
    if fd < 0:
        log.debug("no inotify descriptor (%s): polling %s", os.strerror(ctypes.get_errno()), path)
        return None
    if add(fd, os.fsencode(path), _IN_MODIFY | _IN_ATTRIB | _IN_DELETE_SELF | _IN_MOVE_SELF) < 0:
        log.debug("cannot watch %s (%s): polling it", path, os.strerror(ctypes.get_errno()))
        os.close(fd)
        return None
    return FileWatch(fd, path)
