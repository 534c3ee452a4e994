"""Rows bound for a table, and the COPY text they travel as.

``outbox_events`` rows carry the payload text exactly as the outbox stored it (asyncpg sends
``jsonb`` from text), so the common case neither decodes nor re-encodes. Every other table is a
route (:mod:`shipper.routes`, ``command_calls`` the built-in one): its rows are text values that
Postgres converts to the columns' types, built in the shipper's read-ahead.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from outbox import Event
from outbox.records import EventRow, EventRows, rows_of

from .migrate import EVENT_TABLE

if TYPE_CHECKING:
    from .routes import TableSpec

__all__ = [
    "EVENT_COLUMNS", "COMMAND_COLUMNS", "MAX_US", "Routed", "Table", "column_kind", "events_copy_text",
    "rows_copy_text", "COMMAND_TOPIC",
]

COMMAND_TOPIC = "command_calls"
EVENT_COLUMNS = ("id", "topic", "payload", "created_at")
# The columns `shipper migrate` gives command_calls (the route itself reads them from the catalog).
COMMAND_COLUMNS = (
    "id",
    "discord_uid",
    "player_name",
    "command",
    "guild_id",
    "channel_id",
    "options",
    "outcome",
    "latency_ms",
    "created_at",
    "kind",
    "application_id",
)
assert EVENT_COLUMNS == Event._fields[1:], "outbox_events rows are events without their seq"


@dataclass
class Table:
    """Rows bound for one table, each beside the event it came from.

    ``outbox_events`` rows are the events' own fields, so they are made only if asked for
    (:attr:`rows`): the fast path sends :meth:`copy_text` instead. A route's rows (``spec``
    set) are text values, or None for NULL, that Postgres casts to ``types``; where the route
    could type them (:mod:`shipper.typedrows`), the fast path sends :attr:`records` instead, in
    a binary COPY, and the text rows are made only for the careful path.
    """

    name: str
    columns: tuple[str, ...]
    events: Sequence[Event] = ()  # an outbox.EventRows where the shipper routed a batch read
    _rows: list[tuple[Any, ...]] | None = field(default=None, repr=False)  # None: made from events
    _text: bytes | None = field(default=None, repr=False)
    conflict: tuple[str, ...] = ("id",)  # the key ON CONFLICT names (with created_at when partitioned)
    types: tuple[str, ...] = ()  # a route's column types, for the careful path's casts
    spec: TableSpec | None = field(default=None, repr=False)
    make_rows: Callable[[Sequence[Event]], list[tuple[Any, ...]]] | None = field(default=None, repr=False)
    records: list[tuple[Any, ...]] | None = field(default=None, repr=False)  # typed values, a binary COPY (typedrows.PG_TIME)

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        """One tuple per event, in :attr:`columns` order."""
        if self._rows is None and self.make_rows is not None:
            self._rows = self.make_rows(self.events)
        if self._rows is None:
            self._rows = [event[1:] for event in rows_of(self.events)]  # EVENT_COLUMNS: all but seq
        return self._rows

    def _join_key(self) -> tuple[Any, ...]:
        """What a part of this table must share with another to be joined to it (see
        :meth:`Routed.joined`): the table, its columns, and how its rows are held."""
        made = self.make_rows
        how = (made.func, *map(id, made.args), *made.keywords) if isinstance(made, functools.partial) else made
        kind = "records" if self.records is not None else "rows" if self._rows is not None else "text"
        return (self.name, self.columns, self.conflict, self.types, id(self.spec), how, kind)

    @staticmethod
    def _join(parts: Sequence[Table]) -> Table:
        """Parts of one table (of the same :meth:`_join_key`) as one, in their order."""
        first = parts[0]
        if all(type(part.events) is EventRows for part in parts):
            events: Sequence[Event] = EventRows([row for part in parts for row in rows_of(part.events)])
        else:
            events = [event for part in parts for event in part.events]
        texts = [part._text for part in parts]
        return dataclasses.replace(
            first,
            events=events,
            _rows=None if first._rows is None else [row for part in parts for row in part._rows or ()],
            _text=None if None in texts else b"".join(texts),  # type: ignore[arg-type]
            records=None if first.records is None else [record for part in parts for record in part.records or ()],
        )

    def copy_text(self) -> bytes | None:
        """The rows in COPY's text format, or None where a binary COPY (of :attr:`records`, or
        else of :attr:`rows`) must do.

        Only ``outbox_events`` rows, whose payload is already JSON text: built once (the
        shipper's read-ahead does it while the previous batch is in flight), it leaves the
        send nothing to encode, where a binary COPY encodes every value on the critical path.
        """
        if self._text is None and self.events and self.records is None:
            if self.spec is not None:
                self._text = rows_copy_text(self.rows)
            elif self.name == EVENT_TABLE:
                self._text = events_copy_text(rows_of(self.events))
        return self._text


@dataclass
class Routed:
    """A batch split by destination, plus what was refused before reaching Postgres."""

    tables: list[Table]
    refused: list[tuple[Event, str]]

    @staticmethod
    def joined(parts: Sequence[Routed]) -> Routed:
        """The consecutive slices of one batch, routed each on its own, as one: each table's
        parts joined (their events, their COPY text, typed records or rows, in order), so the
        batch sends what it would routed whole: a COPY per table, set of columns and kind."""
        groups: list[list[Table]] = []  # each table's parts, in the order the tables first came
        into: dict[tuple[Any, ...], list[Table]] = {}
        refused: list[tuple[Event, str]] = []
        for part in parts:
            refused += part.refused
            for table in part.tables:
                key = table._join_key()
                group = into.get(key)
                if group is None:
                    group = into[key] = []
                    groups.append(group)
                group.append(table)
        return Routed([group[0] if len(group) == 1 else Table._join(group) for group in groups], refused)


# COPY's text format: a backslash starts an escape; tab, newline and CR separate fields and rows.
MAX_US = 253_402_300_800_000_000
"""10000-01-01 in Unix microseconds: from there on a timestamp's year needs five digits, which
the encoders' fast ``%Y-%m-%d`` text does not write."""

_KINDS = {
    "bigint": "int", "integer": "int", "smallint": "int",
    "double precision": "float", "real": "float",
    "numeric": "number",
    "text": "text", "character varying": "text", "character": "text", "citext": "text",
    "json": "json", "jsonb": "json",
}


def column_kind(column_type: str, is_array: bool = False) -> str:
    """What a route's encoders write a column's values as, from its type (``format_type``):
    ``"int"``, ``"float"``, ``"number"`` (numeric: an int or a float), ``"text"``, ``"json"``,
    ``"array"``, or ``"other"`` (written by the general field function, Postgres casting it).
    The one classification both encoders (:mod:`shipper.copyrows`, :mod:`shipper.columnar`) read."""
    return "array" if is_array else _KINDS.get(column_type, "other")


def _copy_escape(text: str) -> str:
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def events_copy_text(events: Sequence[EventRow]) -> bytes | None:
    """Events as ``outbox_events`` rows in COPY text, UTF-8; None if one cannot be.

    ``created_at`` (Unix microseconds) is written as a UTC timestamp; the date part is formatted
    once per second, which events made close together share. None (the caller then sends the
    rows in binary, which refuses a bad one row by row) for a time before 1970 or past 9999, a
    time that is not an integer, or text that is not valid UTF-8.
    """
    out: list[str] = []
    last_second, prefix = -1, ""
    try:
        for _, event_id, topic, payload, us in events:
            if type(us) is not int or not 0 <= us < MAX_US:
                return None
            second, micro = divmod(us, 1_000_000)
            if second != last_second:
                last_second, prefix = second, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
            out.append(f"{event_id}\t{_copy_escape(topic)}\t{_copy_escape(payload)}\t{prefix}.{micro:06d}+00\n")
        return "".join(out).encode("utf-8")
    except (TypeError, UnicodeEncodeError):
        return None


def rows_copy_text(rows: Sequence[Sequence[str | None]]) -> bytes | None:
    """Text rows (None for NULL) in COPY's text format, UTF-8; None if one is not valid UTF-8."""
    out = []
    for row in rows:
        out.append("\t".join(["\\N" if v is None else _copy_escape(v) for v in row]))
    out.append("")
    try:
        return "\n".join(out).encode("utf-8")
    except UnicodeEncodeError:
        return None
