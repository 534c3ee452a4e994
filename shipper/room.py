"""Room on disk: prune shipped events as soon as the outbox nears ``max_bytes``; start on a full disk.

Pruning used to run with the rest of the housekeeping, once a minute; with ``max_bytes=2 MiB``
and a healthy sidecar, 11,368 of 20,000 appends at 1,000/s were refused as full although every
event had shipped within milliseconds. So the loop looks a few times a second (one query on
aiosqlite's thread and a few ``stat`` calls) and, past half the limit, prunes every shipped
event at once: replay history is what gives way to room for new events.
"""

from __future__ import annotations

import asyncio
import logging
import time

from outbox import OutboxFullError, OutboxReader
from outbox.maintenance import checkpoint, prune

__all__ = ["Room", "open_when_room"]

log = logging.getLogger(__name__)

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


async def open_when_room(reader: OutboxReader, stop: asyncio.Event, *, first_wait: float = 0.5, cap: float = 10.0) -> bool:
    """Open ``reader``, waiting while its disk is full; False if ``stop`` is set first.

    A sidecar started on a full disk used to exit, leaving the bot's backlog unshipped until
    someone restarted it; shipping is what makes room (pruning), so it must outlast the full disk.
    """
    wait = first_wait
    while True:
        try:
            await reader.open()
            return True
        except OutboxFullError as exc:
            log.warning("%s; retrying in %.1f s, and starting as soon as there is room", exc, wait)
        try:
            async with asyncio.timeout(wait):
                await stop.wait()
            return False
        except asyncio.TimeoutError:
            wait = min(cap, wait * 2)
