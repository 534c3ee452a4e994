"""What ``outbox status`` shows: counts of pending, shipped and dead events, read in one place."""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import schema
from .records import NOT_SET_ASIDE

__all__ = ["Status", "TopicStatus", "count"]



class Query(Protocol):
    """A reader's query: SQL and its parameters in, the first value (or all rows) out."""

    def __call__(self, sql: str, params: Sequence[Any] = ...) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class TopicStatus:
    """Counts for one topic."""

    topic: str
    pending: int
    shipped: int
    dead: int


@dataclass(frozen=True)
class Status:
    """A snapshot of an outbox, as ``outbox status`` shows it."""

    pending: int
    shipped: int
    dead: int
    oldest_pending_age_s: float | None
    bytes: int
    cursor: int
    last_seq: int
    last_error: str | None
    last_error_at: int | None
    topics: tuple[TopicStatus, ...] = field(default=())

    def as_json(self) -> dict[str, Any]:
        """Return the stable JSON shape of ``outbox status --json``."""
        return {
            "pending": self.pending,
            "shipped": self.shipped,
            "dead": self.dead,
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "bytes": self.bytes,
            "cursor": self.cursor,
            "last_seq": self.last_seq,
            "last_error": self.last_error,
            "topics": {t.topic: {"pending": t.pending, "shipped": t.shipped, "dead": t.dead} for t in self.topics},
        }


async def count(path: Path, one: Query, all_: Query, cursor: int, last: int, per_topic: bool) -> Status:
    """Count a reader's events (``one``/``all_`` run its queries) around ``cursor``; ``per_topic`` scans the whole file."""
    pending = int(await one(f"SELECT count(*) FROM events e WHERE e.seq > ? AND {NOT_SET_ASIDE}", (cursor,)))
    retrying = int(await one("SELECT count(*) FROM ship.dead WHERE status = 'retry'"))  # pending again
    below = int(await one("SELECT count(*) FROM events WHERE seq <= ?", (cursor,)))
    aside = int(await one("SELECT count(*) FROM ship.dead WHERE seq <= ?", (cursor,)))
    dead = int(await one("SELECT count(*) FROM ship.dead WHERE status = 'dead'"))
    oldest = await one(
        f"SELECT e.created_at FROM events e WHERE e.seq > ? AND {NOT_SET_ASIDE} ORDER BY e.seq LIMIT 1",
        (cursor,),
    )
    age = None if oldest is None else max(0.0, round((time.time_ns() // 1000 - int(oldest)) / 1e6, 3))
    error = await one("SELECT value FROM ship.meta WHERE key = 'last_error'")
    error_at = await one("SELECT value FROM ship.meta WHERE key = 'last_error_at'")
    topics: tuple[TopicStatus, ...] = ()
    if per_topic:
        rows = await all_(
            "SELECT e.topic,"
            " sum((e.seq > ? AND d.seq IS NULL) OR d.status = 'retry'), sum(e.seq <= ? AND d.seq IS NULL),"
            " sum(d.status = 'dead')"
            " FROM events e LEFT JOIN ship.dead d ON d.seq = e.seq GROUP BY e.topic ORDER BY e.topic",
            (cursor, cursor),
        )
        topics = tuple(TopicStatus(t, int(p or 0), int(s or 0), int(d or 0)) for t, p, s, d in rows)
    return Status(
        pending=pending + retrying,
        shipped=below - aside,
        dead=dead,
        oldest_pending_age_s=age,
        bytes=_bytes_on_disk(path),
        cursor=cursor,
        last_seq=last,
        last_error=None if error is None else str(error),
        last_error_at=None if error_at is None else int(error_at),
        topics=topics,
    )


def _bytes_on_disk(path: Path) -> int:
    try:
        main = os.stat(path).st_size
    except FileNotFoundError:
        main = 0
    return main + schema.side_bytes(path)
