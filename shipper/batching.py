"""How big the next batch may be: grow while a backlog waits, bounded by bytes.

One batch is one transaction and, across a WAN, at least one round trip: at 100 ms away, 1,000
events a batch caps a drain near 10k events/s whatever the bandwidth. So while batches come back
full (more is waiting) the limit doubles, past ``batch_size``, until a batch would exceed
``max_bytes`` (memory, and the time one transaction holds its locks); a short batch (the
backlog is gone) brings it back to ``batch_size``, so light traffic keeps small, quick batches.
``max_bytes=0`` turns growth off: ``batch_size`` is then a hard limit.
"""

from __future__ import annotations

from .sink import Batch

__all__ = ["next_limit", "batch_bytes", "MAX_BATCH_BYTES"]

MAX_BATCH_BYTES = 4 << 20  # a few MiB: ~30 round trips' worth of rows at typical payload sizes
_ROW_OVERHEAD = 64  # id, topic, timestamp and framing, per row, roughly


def batch_bytes(batch: Batch) -> int:
    """About how many bytes the batch sends (its COPY text where built, else its payloads)."""
    total = 0
    for table in batch.routed.tables:
        text = table.copy_text()
        total += len(text) if text is not None else sum(len(e.payload) + _ROW_OVERHEAD for e in table.events)
    return total


def next_limit(limit: int, got: int, nbytes: int, *, batch_size: int, max_bytes: int) -> int:
    """The events to read for the next batch, after one of ``got`` events and ``nbytes`` bytes."""
    if got < limit or max_bytes <= 0:  # nothing more was waiting, or growth is off
        return batch_size
    per_event = max(1, nbytes // max(1, got))
    return max(batch_size, max_bytes // per_event)
