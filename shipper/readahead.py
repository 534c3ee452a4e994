"""Reading batches, and reading the next one while the one before it is in flight.

Read, route and encode the next batch while this one is in flight: the read runs on the loop's
thread in short steps once the query is sent, in the time the loop would spend waiting for
Postgres, so a drain runs at about the speed of COPY alone. It routes in steps, and frees the
batch sent before it, so that the loop's thread is never held long while it also feeds the COPY
in flight to the socket. The loop reads ahead only after a full batch (a short one means
nothing more was there), and drops the read-ahead whenever the batch it follows did not land
where expected (a failure, a skip, a fork, losing the lease).
"""

from __future__ import annotations

import asyncio
import logging

from outbox import OutboxReader, OutboxTextError

from .lease import LeaseKeeper
from .rows import Routed
from .sink import Batch, Sink

__all__ = ["ReadAhead", "STEP"]

STEP = 1024
"""Events routed at a time by a read-ahead: ~1 ms of the loop's thread for typed rows here,
less than the socket's buffer holds of the COPY in flight (see :func:`_route_in_steps`)."""

log = logging.getLogger("shipper.loop")


class ReadAhead:
    """Reads the loop's batches from ``reader`` for ``sink``, and at most one batch ahead."""

    def __init__(self, reader: OutboxReader, sink: Sink, lease: LeaseKeeper) -> None:
        self.reader = reader
        self.sink = sink
        self.lease = lease
        self._prefetch: tuple[int, asyncio.Future[Batch | None]] | None = None

    @property
    def pending(self) -> bool:
        """True while a batch is being (or has been) read ahead."""
        return self._prefetch is not None

    async def read_batch(self, after: int, limit: int, *, ahead: bool = False, spent: Batch | None = None) -> Batch | None:
        """Read up to ``limit`` events after ``after`` and route them; None if nothing is pending.

        A read-ahead runs on the loop's thread (see ``OutboxReader.read_pending``), and so does
        an in-process loop's every read: its batches are small and frequent, and a hop to
        aiosqlite's thread cost more of the bot's CPU than the read itself. A sidecar's first read
        after a pause runs in aiosqlite's thread.
        """
        try:
            events = await self.reader.read_pending(limit, after=after, on_loop=ahead)
        except OutboxTextError:
            # a damaged event (text that is not UTF-8): set aside, so the rest ship; if none is
            # found, the error stands (and stops the shipper, as a damaged file does)
            found = await self.reader.set_aside_unreadable(limit, after=after)
            if not found:
                raise
            for event, why in found:
                log.warning("outbox %s: seq %d (id %s): %s", self.reader.path, event.seq, event.id, why)
            events = await self.reader.read_pending(limit, after=after, on_loop=ahead)
        if not events:
            return None
        batch = Batch(
            self.reader.outbox_id, after, events[-1].seq, events, lease=self.lease.token,
            router=getattr(self.sink, "router", None),
        )
        if ahead and len(events) > STEP:
            await _route_in_steps(batch)
        for table in batch.routed.tables:  # routed and encoded now, off the next send's critical path
            table.copy_text()
        del spent  # the batch sent before, freed here, while the loop waits for Postgres
        return batch

    def start(self, after: int, limit: int, spent: Batch | None = None) -> None:
        """Start reading the batch after ``after`` in the background; it frees ``spent``, a batch
        sent already, once it has routed its own, in the time the loop waits for Postgres.

        Freeing a batch of 5,000 typed events (the rows, their values, the events) takes ~1.8 ms
        of the loop's thread here: at the end of its send, when the next COPY is due and Postgres
        has nothing to do, it cost a drain ~10%.
        """
        self._prefetch = (after, asyncio.ensure_future(self.read_batch(after, limit, ahead=True, spent=spent)))

    async def take(self, cursor: int) -> Batch | None:
        """Return the batch read ahead, if it starts at ``cursor``; None to read afresh."""
        if self._prefetch is None:
            return None
        after, task = self._prefetch
        self._prefetch = None
        if after != cursor:
            _discard(task)
            return None
        return await task  # None: read again, events may have come since

    def drop(self) -> None:
        """Abandon the batch read ahead, if any."""
        if self._prefetch is not None:
            _discard(self._prefetch[1])
            self._prefetch = None


async def _route_in_steps(batch: Batch) -> None:
    """Route and encode ``batch`` :data:`STEP` events at a time, letting the loop run between.

    While the batch before it is in flight, the loop's thread also feeds that batch's COPY to
    the socket. Routed whole, a batch of 5,000 typed events held the thread ~5 ms; a Unix
    socket's send buffer (~200 kB: ~1,000 rows) lasted Postgres half that, and it then waited
    for data the shipper had already encoded: a typed drain ran 10-15% below its speed with an
    8 MB buffer. Routed in steps, the parts are joined into the tables the whole would have
    made (:meth:`shipper.rows.Routed.joined`).
    """
    n = len(batch.events)
    step = -(-n // -(-n // STEP))  # steps of equal size, none of them short (a short one would go as text)
    parts = []
    for start in range(0, n, step):
        part = batch.routing.route(batch.events[start:start + step])
        for table in part.tables:
            table.copy_text()
        parts.append(part)
        await asyncio.sleep(0)
    batch.routed_as(Routed.joined(parts))


def _discard(task: asyncio.Future[Batch | None]) -> None:
    """Abandon a read-ahead (it stops at its next step and closes its statement), unobserved."""
    task.cancel()
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
