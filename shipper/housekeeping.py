"""The loop's side work between batches: dead letters retried, the outbox and Postgres tidied.

Each chore has a clock of its own so the loop can call in after every batch and pay for a chore
only when it is due: a look for dead letters an operator marked for retry (``outbox dead
retry``, from another process) about once a second, pruning past retention, a checkpoint and Postgres's own
housekeeping once a ``housekeeping_interval``, and room under ``max_bytes`` as often as
:mod:`shipper.room` looks. It runs only while this shipper leads, on the loop's own task, so it
never competes with a batch for the connection.
"""

from __future__ import annotations

import logging
import time

from outbox import OutboxReader
from outbox.maintenance import checkpoint, prune

from .room import Room
from .sink import SendResult, Sink

__all__ = ["Housekeeping"]

log = logging.getLogger(__name__)


class Housekeeping:
    """The chores for ``reader``'s outbox and ``sink``; housekeeping proper every ``interval`` s."""

    def __init__(self, reader: OutboxReader, sink: Sink, *, interval: float) -> None:
        self.reader = reader
        self.sink = sink
        self.interval = interval
        self._room = Room(reader)
        self._next_retry_check = 0.0
        self._next_housekeeping = 0.0

    async def retry_dead_letters(self, now: float, *, every: float, batch_size: int) -> SendResult | None:
        """Send up to ``batch_size`` dead letters due a retry again, looking at most every
        ``every`` seconds; what became of them, or None if none were sent."""
        if now < self._next_retry_check:
            return None
        self._next_retry_check = now + every
        events = await self.reader.read_retries(batch_size)
        if not events:
            return None
        result = await self.sink.upsert(events, self.reader.set_aside)
        refused = {event.seq for event, _ in result.rejected}
        await self.reader.resolve([e.seq for e in events if e.seq not in refused])
        log.info("retried %d dead letters: %d shipped, %d refused again", len(events), result.shipped, len(refused))
        return result

    async def tidy(self, now: float, *, retention_s: float) -> None:
        """Housekeep if due; prune to stay under ``max_bytes`` if the outbox nears it."""
        if now >= self._next_housekeeping:
            self._next_housekeeping = now + self.interval
            await self._housekeeping(retention_s)
        if pruned := await self._room.keep():
            log.debug("pruned %d shipped events from %s to stay under max_bytes", pruned, self.reader.path)

    async def _housekeeping(self, retention_s: float) -> None:
        """Prune shipped events past retention; checkpoint."""
        cutoff = time.time_ns() // 1000 - int(retention_s * 1e6)
        pruned = await prune(self.reader, older_than_us=cutoff)  # room under max_bytes: self._room
        if pruned:
            log.info("pruned %d shipped events from %s", pruned, self.reader.path)
        await checkpoint(self.reader)
        await self.sink.housekeeping(self.reader.outbox_id, retention_s)
