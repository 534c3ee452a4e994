"""Routes: a topic's events into a table whose columns the catalog describes.

``command_calls`` is the built-in route; ``routes={"match_results": "match_results"}`` adds the
user's own tables. The shipper reads each table's columns from ``pg_catalog`` when it connects
(so once, and again after any error, which closes the connection) and fills them from each event:
``id`` from the event's id, ``created_at`` from its time, a ``payload`` json/jsonb column with
the whole payload, every other column from the payload key of the same name. Values go to
Postgres as text (COPY's text format on the fast path, ``text::type`` casts on the careful one),
so Postgres's own input functions convert them: a timestamp string becomes ``timestamptz``, a
Discord snowflake sent as a string becomes ``bigint``. A value Postgres refuses, or a NOT NULL
column whose key is missing, makes that event a dead letter with Postgres's message; the rest of
its batch ships. A missing key gives the column's default (the event goes in a group of rows that
leaves that column out) or NULL; keys without a column are dropped.

Rows are built in the shipper's read-ahead, so the send has nothing left to encode.
"""

from __future__ import annotations

import datetime
import functools
import importlib
import json
import operator
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from outbox import Event, EventRows
from outbox.records import EventRow, rows_of
from outbox.payload import compact_json, payload_problem

from .catalog import read_json, text_array
from .copyrows import Encoder, compile_encoder
from .errors import SchemaError
from .migrate import COMMAND_TABLE, EVENT_TABLE
from .rows import COMMAND_TOPIC, EVENT_COLUMNS, MAX_US, Routed, Table
from .typedrows import TypedEncoder, typed_encoder

__all__ = [
    "Column",
    "TableSpec",
    "Router",
    "RouteError",
    "quote_ident",
    "qualify",
    "parse_routes",
]

# NOT NULL columns of command_calls, for sinks that have no catalog to read (InMemorySink).
COMMAND_REQUIRED = ("discord_uid", "command")
_MISSING = object()


class RouteError(SchemaError):
    """A route names a table the shipper cannot write (missing, or without a uuid ``id`` key)."""


def quote_ident(name: str) -> str:
    """Quote an identifier for SQL text, whatever it contains."""
    return '"' + name.replace('"', '""') + '"'


def qualify(schema: str, name: str) -> str:
    """``"schema"."name"``: every statement names its tables through this one helper."""
    return f"{quote_ident(schema)}.{quote_ident(name)}"


def parse_routes(items: Sequence[str] | str | None) -> dict[str, str]:
    """Parse ``TOPIC=TABLE`` items (or one ``a=b,c=d`` string); ValueError naming a bad one."""
    if items is None:
        return {}
    if isinstance(items, str):
        items = [items]
    routes: dict[str, str] = {}
    for item in (part.strip() for chunk in items for part in chunk.split(",")):
        if not item:
            continue
        topic, sep, table = (s.strip() for s in item.partition("="))
        if not sep or not topic or not table:
            raise ValueError(f"route {item!r} is not TOPIC=TABLE")
        if table in (EVENT_TABLE, "outbox_ledger", "outbox_schema_version"):
            raise ValueError(f"route {item!r}: {table} is the shipper's own table")
        routes[topic] = table
    return routes


@dataclass(frozen=True)
class Column:
    """One writable column, as the catalog describes it."""

    name: str
    type: str  # without typmod: a cast to it leaves length checks to the column itself
    not_null: bool = False
    has_default: bool = False
    is_array: bool = False


@dataclass(frozen=True)
class TableSpec:
    """A route's table: its writable columns and the key that ``ON CONFLICT`` names."""

    name: str
    columns: tuple[Column, ...]
    conflict: tuple[str, ...] = ("id",)
    keyed: frozenset[str] = field(default=frozenset())  # columns filled from payload keys
    encoders: dict[tuple[str, ...], Encoder] = field(default_factory=dict, compare=False, repr=False)
    typed_encoders: dict[tuple[str, ...], TypedEncoder | None] = field(default_factory=dict, compare=False, repr=False)

    @staticmethod
    def build(name: str, columns: Sequence[Column], conflict: Sequence[str]) -> TableSpec:
        """A spec whose ``keyed`` set is derived from the columns."""
        keyed = frozenset(c.name for c in columns if _fill(c) == _KEY)
        return TableSpec(name, tuple(columns), tuple(conflict), keyed)

    def shape(self, event: EventRow) -> tuple[str, ...] | None:
        """The payload-keyed columns this event has no key for (None: its payload is unreadable)."""
        try:
            data = decode_payload(event[3])
        except (ValueError, RecursionError):
            return None
        if type(data) is not dict:
            return None
        return tuple(c.name for c in self.columns if _fill(c) == _KEY and c.name not in data)

    def omitted(self, missing: tuple[str, ...]) -> tuple[str, ...]:
        """Of the ``missing`` keys, the columns left to their defaults (the rest are NULL)."""
        return tuple(c.name for c in self.columns if c.has_default and c.name in missing)

    def _layout(self, missing: tuple[str, ...]) -> tuple[list[tuple[str, int, bool, str]], tuple[str, ...], list[str]]:
        """What an encoder for events lacking exactly the ``missing`` keys is built from: the
        columns written (``(name, fill, is_array, type)``), those left to their defaults, and
        those written as NULL."""
        omitted = self.omitted(missing)
        written = [(c.name, _fill(c), c.is_array, c.type) for c in self.columns if c.name not in omitted]
        return written, omitted, [name for name in missing if name not in omitted]

    def encoder(self, missing: tuple[str, ...]) -> Encoder:
        """The compiled COPY encoder for events whose payloads lack exactly the ``missing`` keys."""
        encode = self.encoders.get(missing)
        if encode is None:
            encode = self.encoders[missing] = compile_encoder(*self._layout(missing))
        return encode

    def typed_encoder(self, missing: tuple[str, ...]) -> TypedEncoder | None:
        """The typed-row encoder (binary COPY) for the same events as :meth:`encoder`, or None
        where the table's column types rule it out (:mod:`shipper.typedrows`)."""
        if missing not in self.typed_encoders:
            self.typed_encoders[missing] = typed_encoder(*self._layout(missing))
        return self.typed_encoders[missing]


_ID, _CREATED, _PAYLOAD, _KEY = range(4)
_TOPIC = operator.itemgetter(2)  # Event.topic


def _fill(column: Column) -> int:
    if column.name == "id":
        return _ID
    if column.name == "created_at":
        return _CREATED
    if column.name == "payload" and column.type in ("json", "jsonb"):
        return _PAYLOAD
    return _KEY


class Router:
    """Which table each topic's events go to, and how to turn them into that table's rows.

    Parameters
    ----------
    routes:
        ``{topic: table}``, the user's own tables, on top of the built-in ``command_calls``.
    schema:
        The schema every table is in.
    """

    def __init__(self, routes: Mapping[str, str] | None = None, *, schema: str = "public") -> None:
        self.routes: dict[str, str] = {COMMAND_TOPIC: COMMAND_TABLE, **(routes or {})}
        self.schema = schema
        self.specs: dict[str, TableSpec] = {}  # empty until load(): tables known by name only
        self.conflicts: dict[str, tuple[str, ...]] = {}

    def table_of(self, topic: str) -> str:
        """The table an event of ``topic`` lands in."""
        return self.routes.get(topic, EVENT_TABLE)

    @property
    def tables(self) -> list[str]:
        """Every table this router writes, ``outbox_events`` first."""
        return [EVENT_TABLE, *dict.fromkeys(self.routes.values())]

    async def load(self, conn: asyncpg.Connection) -> None:
        """Read every routed table's columns and keys from the catalog; RouteError if one is unusable."""
        self.apply(await read_json(conn, self.catalog_sql()))  # one round trip

    def catalog_sql(self) -> str:
        """The catalog read :meth:`load` makes, as one ``json`` expression (values quoted in), so
        that a sink can fold it into its start-up query."""
        names = self.tables
        return _CATALOG.format(names=text_array(names), qualified=text_array(qualify(self.schema, n) for n in names))

    def apply(self, found: Sequence[Sequence[Any]] | None) -> None:
        """Take the specs from what :meth:`catalog_sql` read; RouteError if a table is unusable."""
        specs: dict[str, TableSpec] = {}
        conflicts: dict[str, tuple[str, ...]] = {}
        for name, exists, columns, keys in found or ():
            where = (
                f"table {self.schema}.{name}" if name in (EVENT_TABLE, COMMAND_TABLE)
                else f"route {self._topic_of(name)} -> {self.schema}.{name}"
            )
            spec = read_spec(where, name, exists, columns or [], keys or [])
            conflicts[name] = spec.conflict
            if name != EVENT_TABLE:
                specs[name] = spec
        self.specs, self.conflicts = specs, conflicts

    def _topic_of(self, table: str) -> str:
        return next((t for t, name in self.routes.items() if name == table), table)

    def route(self, events: Sequence[Event]) -> Routed:
        """Split ``events`` into per-table rows; refuse those whose payload cannot be read."""
        # The events' plain rows throughout (see outbox.EventRows), as events only where one is refused
        rows = rows_of(events)
        unrouted: list[EventRow] = []
        groups: dict[str, list[EventRow]] = {}
        routes = self.routes
        topics = set(map(_TOPIC, rows))
        if len(topics) == 1:  # a backlog of one kind, the common case: no loop over the events
            name = routes.get(topics.pop())
            if name is None:
                unrouted = list(rows)
            else:
                groups[name] = list(rows)
        else:
            for row in rows:
                name = routes.get(row[2])
                if name is None:
                    unrouted.append(row)
                else:
                    groups.setdefault(name, []).append(row)
        conflict = self.conflicts.get(EVENT_TABLE, ("id",))
        routed = Routed([Table(EVENT_TABLE, EVENT_COLUMNS, EventRows(unrouted), conflict=conflict)] if unrouted else [], [])
        for name, group in groups.items():
            spec = self.specs.get(name)
            if spec is None:  # no catalog read (an in-memory sink): the events, by table
                routed.tables.append(Table(name, (), events=EventRows(group), _rows=[]))
                continue
            missing = spec.shape(group[0])  # the events of one route usually all have the same keys
            if missing is not None:
                omitted = spec.omitted(missing)
                kept = [c for c in spec.columns if c.name not in omitted]
                encoded = functools.partial(  # a table of the events an encoder took
                    Table, spec.name, tuple(c.name for c in kept), conflict=spec.conflict,
                    types=tuple(c.type for c in kept), spec=spec, make_rows=functools.partial(_rows_of, spec),
                )
                typed = spec.typed_encoder(missing)
                if typed is not None:  # the slices that can go as a binary COPY of typed rows
                    records, done, group = typed(group)
                    if done:
                        routed.tables.append(encoded(events=EventRows(done), records=records))
                lines, done, group = spec.encoder(missing)(group)
                try:
                    text = "".join(lines).encode("utf-8")
                except UnicodeEncodeError:  # a lone surrogate (a payload's "\ud800"): the general path names it
                    done, group = [], [*done, *group]
                if done:
                    routed.tables.append(encoded(events=EventRows(done), _text=text))
            if group:  # what the compiled encoder left: defaults, refusals
                text_tables(spec, EventRows(group), routed)
        return routed


# Every routed table's columns and unique keys, as one JSON array of [name, exists, columns, keys].
_CATALOG = """
(SELECT json_agg(json_build_array(t.name, c.oid IS NOT NULL,
  (SELECT json_agg(json_build_array(a.attname, format_type(a.atttypid, NULL), a.attnotnull,
            a.atthasdef OR a.attidentity = 'd', ty.typcategory = 'A', a.attgenerated <> '' OR a.attidentity = 'a')
          ORDER BY a.attnum)
     FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
    WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped),
  (SELECT json_agg(k.cols) FROM (
      SELECT array_agg(a.attname::text ORDER BY u.ord) AS cols FROM pg_index i
       CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS u(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = u.attnum
       WHERE i.indrelid = c.oid AND i.indisunique AND i.indpred IS NULL GROUP BY i.indexrelid) AS k)) ORDER BY t.ord)
FROM unnest({names}, {qualified}) WITH ORDINALITY AS t(name, qualified, ord)
LEFT JOIN pg_class c ON c.oid = to_regclass(t.qualified))
"""


def read_spec(where: str, name: str, exists: bool, rows: list[list[Any]], keys: list[list[str]]) -> TableSpec:
    """One table's spec from what the catalog says: its writable columns and its ``id`` key."""
    if not exists:
        hint = "run `shipper migrate`" if where.startswith("table ") else "create it, or drop the route"
        raise RouteError(f"{where}: no such table ({hint})")
    columns = [Column(r[0], r[1], r[2], r[3], r[4]) for r in rows if not r[5]]
    by_name = {c.name: c for c in columns}
    if "id" not in by_name or by_name["id"].type != "uuid":
        raise RouteError(f"{where}: the table needs an `id uuid` column (the event's id goes there)")
    sets = [tuple(k) for k in keys]
    conflict = next((k for k in sets if k == ("id",)), None) or next(
        (k for k in sets if sorted(k) == ["created_at", "id"]), None
    )
    if conflict is None:
        raise RouteError(
            f"{where}: `id` must be the primary key or a unique key (or, partitioned, (id, created_at)):"
            " it is what makes replays and retries exactly once"
        )
    if name == EVENT_TABLE:
        return TableSpec(name, (), conflict)
    return TableSpec.build(name, columns, conflict)


# -- rows --------------------------------------------------------------------------------------

_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _optional_orjson() -> tuple[Callable[[str], Any] | None, Callable[[Any], bytes] | None]:
    """orjson's ``loads`` and ``dumps`` if it is installed (``pip install discord-outbox[fast]``):
    faster than the standard decoder, which is much of a route's cost per event (measured per
    command payload: 1.3 us, with the exactness check in :func:`decode_payload`, against 1.8 us),
    and ~5x faster at writing a json/jsonb column's value back out."""
    try:
        module = importlib.import_module("orjson")
    except ImportError:
        return None, None
    return module.loads, module.dumps


_fast_loads, _fast_dumps = _optional_orjson()


def json_text(value: Any) -> str:
    """A decoded payload value as JSON text for a json/jsonb column (Postgres normalises it, so
    orjson's spelling and the outbox's agree once there)."""
    if _fast_dumps is not None:
        try:
            return _fast_dumps(value).decode("utf-8")
        except TypeError:  # e.g. an integer past 64 bits, which the standard encoder takes
            pass
    return compact_json(value)


def decode_payload(text: str) -> Any:
    """Decode an event's payload: orjson if installed, else ``json.loads`` without its wrapper's
    regex passes (the outbox stores compact JSON)."""
    if _fast_loads is not None:
        try:
            value = _fast_loads(text)
        except ValueError:
            pass
        else:
            # orjson reads an integer past 64 bits as a float, silently: 2**70 would reach a
            # numeric or jsonb column rounded. Trusted only when writing the value back gives the
            # stored text exactly (what the outbox writes, compact, does), else the standard
            # decoder, which keeps every integer whole, reads it. Measured per command payload:
            # 1.3 us with the check, 1.8 us for the standard decoder.
            if _fast_dumps is not None and _fast_dumps(value) == text.encode("utf-8"):
                return value
    try:
        value, end = _scan(text, 0)
    except (StopIteration, ValueError):
        end = -1
    return value if end == len(text) else json.loads(text)


def _stamp(us: int) -> str:
    if type(us) is not int:
        raise ValueError(f"created_at {us!r} is not an integer")
    if 0 <= us < MAX_US:
        second, micro = divmod(us, 1_000_000)
        return f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(second))}.{micro:06d}+00"
    try:
        moment = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc) + datetime.timedelta(microseconds=us)
    except OverflowError:
        raise ValueError(f"created_at {us} is out of range") from None
    return moment.isoformat()


def array_literal(value: list[Any]) -> str:
    """A JSON list as a Postgres array literal, for an array column."""
    parts = []
    for item in value:
        if item is None:
            parts.append("NULL")
        elif type(item) is list:
            parts.append(array_literal(item))
        else:
            text = _text(item)
            parts.append('"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(parts) + "}"


def _text(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return value  # type: ignore[no-any-return]
    if kind is bool:
        return "true" if value else "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        return float.__repr__(value)
    return compact_json(value)


def _check_sendable(row: list[str | None], data: Any) -> None:
    """Raise ValueError, naming the value, if a row's text cannot be encoded as UTF-8.

    The outbox refuses such payloads on append, but a file may have been written by other
    means, and a ``\\ud800`` escape decodes to a lone surrogate, which UTF-8 cannot encode: the
    batch could never be sent, and would be retried for ever. (A ``\\u0000`` is Postgres's to
    refuse, row by row: the fast encoders write it as any other character.)
    """
    text = "\t".join([v for v in row if v is not None])
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(payload_problem(data) or "a value is not valid UTF-8 text") from None


def text_tables(spec: TableSpec, events: Sequence[Event], into: Routed) -> None:
    """Add ``events`` as rows of ``spec`` to ``into``: one table per set of defaulted columns."""
    plan = [(_fill(c), c.name, c.is_array, c.has_default) for c in spec.columns]
    names = [c.name for c in spec.columns]
    types = {c.name: c.type for c in spec.columns}
    groups: dict[tuple[str, ...], tuple[Table, list[Event]]] = {}  # each table, and the list of its events
    last_second, prefix = -1, ""
    for event in events:
        try:
            data = decode_payload(event.payload)
            if type(data) is not dict:
                raise ValueError("the payload is not a JSON object")
            row: list[str | None] = []
            omitted: tuple[str, ...] = ()
            for fill, name, is_array, has_default in plan:
                if fill == _KEY:
                    value = data.get(name, _MISSING)
                    if value is _MISSING and has_default:
                        omitted += (name,)
                    elif value is None or value is _MISSING:
                        row.append(None)
                    elif is_array and type(value) is list:
                        row.append(array_literal(value))
                    else:
                        row.append(_text(value))
                elif fill == _ID:
                    row.append(event.id)
                elif fill == _PAYLOAD:
                    row.append(event.payload)
                else:
                    us = event.created_at
                    if type(us) is int and 0 <= us < MAX_US:
                        second, micro = divmod(us, 1_000_000)
                        if second != last_second:
                            last_second = second
                            prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
                        row.append(f"{prefix}.{micro:06d}+00")
                    else:
                        row.append(_stamp(us))
            _check_sendable(row, data)
        except Exception as exc:  # whatever one payload makes fail (RecursionError too) is a dead letter, never a retry
            into.refused.append((event, f"{spec.name} event refused: {exc}"))
            continue
        if omitted not in groups:
            columns = tuple(n for n in names if n not in omitted)
            held: list[Event] = []
            table = Table(spec.name, columns, held, _rows=[], conflict=spec.conflict, types=tuple(types[n] for n in columns), spec=spec)
            groups[omitted] = (table, held)
        table, held = groups[omitted]
        table.rows.append(tuple(row))
        held.append(event)
    into.tables.extend(table for table, _ in groups.values())


def _rows_of(spec: TableSpec, events: Sequence[Event]) -> list[tuple[Any, ...]]:
    """The text rows of events the compiled encoder wrote (for the careful path, rarely needed)."""
    routed = Routed([], [])
    text_tables(spec, events, routed)
    return [row for table in routed.tables for row in table.rows]
