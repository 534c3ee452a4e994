"""What a reader hands out: events and dead letters, as plain tuples."""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Event", "DeadLetter"]

# true for an event ``e`` that is not a dead letter (SQL over ``events e``)
NOT_SET_ASIDE = "NOT EXISTS (SELECT 1 FROM ship.dead d WHERE d.seq = e.seq)"


class Event(NamedTuple):
    """One event as stored: ``payload`` is the JSON text, ready for a ``jsonb`` column."""

    seq: int
    id: str
    topic: str
    payload: str
    created_at: int  # microseconds since the Unix epoch, UTC


class DeadLetter(NamedTuple):
    """An event Postgres refused, kept with the reason."""

    seq: int
    id: str
    topic: str
    error: str
    status: str  # 'dead', or 'retry' once an operator asked for another attempt
    attempts: int
    failed_at: int  # microseconds since the Unix epoch, UTC
