"""What a reader hands out: events and dead letters, as plain tuples."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import NamedTuple, overload

__all__ = ["Event", "EventRow", "EventRows", "DeadLetter", "rows_of"]

# true for an event ``e`` that is not a dead letter (SQL over ``events e``)
NOT_SET_ASIDE = "NOT EXISTS (SELECT 1 FROM ship.dead d WHERE d.seq = e.seq)"


class Event(NamedTuple):
    """One event as stored: ``payload`` is the JSON text, ready for a ``jsonb`` column."""

    seq: int
    id: str
    topic: str
    payload: str
    created_at: int  # microseconds since the Unix epoch, UTC


EventRow = tuple[int, str, str, str, int]
"""An event as SQLite returns its row: what an :class:`Event` is, without the field names."""

_as_event = tuple.__new__  # Event(*row) without the Python-level __new__: half the cost
_EVENT_TYPE = itertools.repeat(Event)


class EventRows(Sequence[Event]):
    """A read's events, held as the plain rows SQLite returned; each :class:`Event` is made
    when it is asked for.

    Why not a list of events: a named tuple is a tuple subclass, and CPython's garbage
    collector untracks only exact tuples whose items need no tracking. A shipper's batch of
    events lives across a few collections, so as named tuples every one was promoted and then
    traversed again by the older generations' collections, 12-15% of a drain's time. The rows
    SQLite hands back are exact tuples: the first collection untracks them. The shipper's own
    encoders read :attr:`rows` by index; anything else (a user's sink, a log line) sees events.
    """

    __slots__ = ("rows",)

    def __init__(self, rows: Sequence[EventRow] = ()) -> None:
        self.rows: Sequence[EventRow] = rows

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> Event: ...

    @overload
    def __getitem__(self, index: slice) -> EventRows: ...

    def __getitem__(self, index: int | slice) -> Event | EventRows:
        if isinstance(index, slice):
            return EventRows(self.rows[index])
        return _as_event(Event, self.rows[index])

    def __iter__(self) -> Iterator[Event]:
        return map(_as_event, _EVENT_TYPE, self.rows)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, EventRows):
            return list(self.rows) == list(other.rows)
        if isinstance(other, (list, tuple)):
            return list(self.rows) == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # as a list's: the rows may change

    def __repr__(self) -> str:
        return f"EventRows({list(self)!r})"


def rows_of(events: Sequence[Event]) -> Sequence[EventRow]:
    """The plain rows of ``events``: those an :class:`EventRows` holds, else the events themselves
    (an event is its row), for code that reads fields by index and would only pay for events."""
    return events.rows if type(events) is EventRows else events


class DeadLetter(NamedTuple):
    """An event Postgres refused, kept with the reason."""

    seq: int
    id: str
    topic: str
    error: str
    status: str  # 'dead', or 'retry' once an operator asked for another attempt
    attempts: int
    failed_at: int  # microseconds since the Unix epoch, UTC
