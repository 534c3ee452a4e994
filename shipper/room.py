"""Room under ``max_bytes``: prune shipped events as soon as the outbox nears its limit.

Pruning used to run with the rest of the housekeeping, once a minute; with ``max_bytes=2 MiB``
and a healthy sidecar, 11,368 of 20,000 appends at 1,000/s were refused as full although every
event had shipped within milliseconds. So the loop looks a few times a second (one query on
aiosqlite's thread and a few ``stat`` calls) and, past half the limit, prunes every shipped
event at once: replay history is what gives way to room for new events.
"""

from __future__ import annotations

import time

from outbox import OutboxReader
from outbox.maintenance import checkpoint, prune

__all__ = ["Room"]

_LOOK_EVERY_S = 0.1
_LIMIT_EVERY_S = 5.0  # the limit is the appenders' (meta.max_bytes); one may open with it later
_EVERYTHING = 2**62  # "created before": every shipped event, whatever the clock says


class Room:
    """Keeps the outbox under half its ``max_bytes`` by pruning what has shipped."""

    def __init__(self, reader: OutboxReader) -> None:
        self.reader = reader
        self._limit: int | None = None
        self._next_look = 0.0
        self._next_limit = 0.0

    async def keep(self) -> int:
        """Prune if the outbox is past half its limit (looking at most every 0.1 s); how many."""
        now = time.monotonic()
        if now < self._next_look:
            return 0
        self._next_look = now + _LOOK_EVERY_S
        if now >= self._next_limit:
            self._next_limit = now + _LIMIT_EVERY_S
            limit = await self.reader.meta("max_bytes")
            self._limit = None if limit is None else int(limit)
        if self._limit is None or await self.reader.used_bytes() <= self._limit // 2:
            return 0
        pruned = await prune(self.reader, older_than_us=_EVERYTHING)
        if pruned:
            await checkpoint(self.reader)  # the freed pages are reused sooner once in the file
        return pruned
