"""How big the next batch may be: big enough that its round trip is a small share of its time.

One batch is one transaction: at least one round trip and one commit (a WAL flush). Across a
WAN, at 100 ms away, 1,000 events a batch caps a drain near 10k events/s whatever the bandwidth;
on loopback the same round trip is a fraction of a millisecond, and a big batch only costs: the
read-ahead (:mod:`shipper.readahead`) hides the next batch's read behind this one's COPY, which
works when consecutive batches are of a size, and the shipper's memory is a batch or two.

So while batches come back full (more is waiting) the next one is sized from what was measured:
``trip``, the fixed cost of one transaction (the lease's round trips, each a commit of a one-row
UPDATE: :class:`shipper.lease.LeaseKeeper`), and the time per event of the last send. The batch
grows until the fixed part is about :data:`TRIP_SHARE` of it, never past ``max_bytes`` (memory,
and the time one transaction holds its locks) nor below ``batch_size``. A short batch (the
backlog is gone) brings it back to ``batch_size``, so light traffic keeps small, quick batches.
``max_bytes=0`` turns growth off: ``batch_size`` is then a hard limit.

Measured on loopback (2 cores): ~0.5 ms a transaction, ~4 us an event, so batches of a few
thousand; at 100 ms away, the 8 MiB cap (~30k events) from the second batch on.
"""

from __future__ import annotations

from collections.abc import Callable

from outbox.records import rows_of

from .columnar import _TEXT  # Event.payload
from .sink import Batch

__all__ = ["BatchSizer", "next_limit", "batch_bytes", "MAX_BATCH_BYTES", "TRIP_SHARE"]

MAX_BATCH_BYTES = 8 << 20  # ~30k events of ~250 bytes: a 100k backlog 100 ms away in ~4 transactions
TRIP_SHARE = 0.05  # a batch's fixed cost (round trip, commit) at most about this share of its time
_ROW_OVERHEAD = 64  # id, topic, timestamp and framing, per row, roughly
_GUESS_PER_EVENT_S = 10e-6  # before any send was timed: a slow loopback COPY, so the first step is modest


def batch_bytes(batch: Batch) -> int:
    """About how many bytes the batch sends (its COPY text where built, else its payloads)."""
    total = 0
    for table in batch.routed.tables:
        text = table.copy_text()
        if text is not None:
            total += len(text)
        else:  # in C, not a generator: a typed route's batch has no text, and this ran per event
            rows = rows_of(table.events)
            total += sum(map(len, map(_TEXT, rows))) + _ROW_OVERHEAD * len(rows)
    return total


def next_limit(
    limit: int,
    got: int,
    nbytes: int,
    *,
    batch_size: int,
    max_bytes: int,
    trip_s: float | None = None,
    per_event_s: float | None = None,
) -> int:
    """The events to read for the next batch, after one of ``got`` events and ``nbytes`` bytes.

    ``trip_s``: the fixed cost of one transaction, if measured (None: unknown, so grow to
    ``max_bytes`` as if it were large). ``per_event_s``: the last send's seconds per event.
    """
    if got < limit or max_bytes <= 0:  # nothing more was waiting, or growth is off
        return batch_size
    per_event = max(1, nbytes // max(1, got))
    cap = max(batch_size, max_bytes // per_event)
    if trip_s is None:
        return cap
    each = per_event_s if per_event_s is not None and per_event_s > 0 else _GUESS_PER_EVENT_S
    want = int(trip_s / TRIP_SHARE / each)
    return max(batch_size, min(cap, want))


class BatchSizer:
    """The loop's batch limit, kept by the rule above from what each batch measured.

    ``trip`` gives the current estimate of a transaction's fixed cost (the lease keeper's).
    """

    def __init__(self, batch_size: int, max_bytes: int, trip: Callable[[], float | None]) -> None:
        self.batch_size = batch_size
        self.max_bytes = max_bytes
        self.limit = batch_size  # the most events the next read takes
        self._trip = trip
        self._per_event_s: float | None = None  # the last send's, per event

    def read(self, batch: Batch) -> bool:
        """Note a batch just read; True if it came back full (more is waiting: read ahead)."""
        got, limit = len(batch.events), self.limit
        self.limit = next_limit(
            limit, got, batch_bytes(batch), batch_size=self.batch_size, max_bytes=self.max_bytes,
            trip_s=self._trip(), per_event_s=self._per_event_s,
        )
        return got == limit

    def sent(self, events: int, seconds: float) -> None:
        """Note how long a batch of ``events`` took to send."""
        if events:
            self._per_event_s = seconds / events

    def timed_out(self) -> None:
        """A batch hit the statement timeout: try one half its size."""
        self.limit = max(1, self.limit // 2)
