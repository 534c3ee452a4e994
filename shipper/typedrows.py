"""A route's rows as typed values, for a binary COPY: what Postgres need not parse from text.

A typed route's COPY text costs both sides of the socket: the shipper writes every integer,
float and timestamp out as text, and Postgres parses each back. A binary COPY of the decoded
values skips the parsing. Measured on 62,500 ``command_calls`` events here, per event (medians
of 6 interleaved runs):

============================  ============  ==============  ===============
path                          build rows    send (client)   Postgres
============================  ============  ==============  ===============
COPY text (shipper.columnar)  2.2 us        0.34 us         2.96 us
binary COPY of these rows     0.9 - 1.5 us  0.93 us         2.16 us
============================  ============  ==============  ===============

asyncpg encodes the values in C as it sends them, but per value that costs about what writing
the text did (a uuid from its text 134 ns, a timestamptz through the connection's codec 184 ns),
so the shipper's own CPU stays about the same and Postgres's drops by a quarter: in whole drains
(``bench.ship_typed``, the ship section's ``ship_text`` diagnostic) 2.2-2.8 against 3.3-3.6 ms of
Postgres CPU per 1,000 events, at the same throughput (the drain is bound by the shipper's own
thread on a 2-core host). That is the CPU a managed Postgres bills for.

The rows must land exactly as the text path would land them, so a batch goes binary only where
nothing can differ:

- the table's columns are all of types whose binary input takes the value the text path would
  have written, to the same result: ``bigint``/``integer``/``smallint`` (an int in range),
  ``double precision`` (a float, or an int within 2**53, exact either way), ``text``/``varchar``/
  ``char`` (a str: their binary input applies the same length rules), ``json``/``jsonb`` (an
  object or array, as the text path's own JSON writer spells it), the event's ``uuid`` id (in
  its canonical spelling) and ``timestamptz`` time (Unix microseconds, which the shipper's
  connection sends through its own codec, :func:`shipper.connection.connect`). ``real`` is not
  among them (text rounds a decimal to float4 once, binary a double to float4: twice), nor
  ``numeric``, arrays, or any other type;
- msgspec (the ``fast`` extra) reads the slice typed, every payload one object with every key
  the table writes and none of those whose presence changes its shape (:mod:`shipper.columnar`);
- no payload in the slice holds a backslash: then no string holds a control character, a lone
  surrogate or a NUL (JSON spells each with one), so nothing is left that COPY text escapes.

A slice that fails any of these goes to the text encoders, unchanged. Postgres refusing a row of
a binary COPY is what it is for a text one: the sink's careful path (:mod:`shipper.refusals`)
then inserts the batch's text rows with Postgres's casts, and names the row at fault.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Callable, Sequence
from typing import Any

from outbox.records import EventRow

from .columnar import _CREATED, _ID, _TEXT, MIN_EVENTS, _optional_msgspec, _row_decoders
from .connection import PG_EPOCH_US
from .copyrows import CHUNK  # slices as the text encoders slice a batch
from .rows import MAX_US, column_kind

__all__ = ["TypedEncoder", "typed_encoder", "PG_TIME"]

PG_TIME = "created_at"
"""The column whose typed values are Postgres's own ``timestamptz`` (microseconds since
2000-01-01), for :func:`shipper.pgcopy.copy_with_statements`'s ``pg_times``: sent as an ``int8``,
the same bytes, with no Python call per value through the connection's codec."""

# (typed rows, the events they are, the events left to the text encoders)
TypedEncoder = Callable[[Sequence[EventRow]], tuple[list[tuple[Any, ...]], list[EventRow], list[EventRow]]]

_UUID_CHARS = b"0123456789abcdefABCDEF-\n"
_HYPHENS = (8, 13, 18, 23)  # in a canonical UUID: 8-4-4-4-12 hex digits


def _canonical_uuids(ids: list[str]) -> bool:
    """True if every id is a UUID in its canonical spelling (8-4-4-4-12 hex digits, either case):
    asyncpg's parser takes hyphens anywhere, Postgres's does not. As whole-string operations on
    the slice's ids joined, 37 characters apart, in C: a regular expression took ~0.36 us an id,
    ~7% of a typed drain."""
    joined = "\n".join(ids)
    n = len(ids)
    return (
        len(joined) == 37 * n - 1
        and joined.count("\n") == n - 1 and joined[36::37] == "\n" * (n - 1)  # each id 36 characters
        and joined.count("-") == 4 * n and all(joined[at::37] == "-" * n for at in _HYPHENS)
        and joined.isascii() and not joined.encode("ascii").translate(None, _UUID_CHARS)
    )


_INT_RANGES = {"bigint": 63, "integer": 31, "smallint": 15}
_FLOAT_EXACT = 2**53
_TEXT_TYPES = frozenset({"text", "character varying", "character"})
_JSON_TYPES = frozenset({"json", "jsonb"})
_JSON_CONTAINERS = frozenset({dict, list})

Check = Callable[[Sequence[Any]], Sequence[Any] | None]  # a column's values -> what to send, or None


def _int_check(bits: int) -> Check:
    low, high = -(2**bits), 2**bits - 1

    def check(values: Sequence[Any]) -> Sequence[Any] | None:
        return values if low <= min(values) and max(values) <= high else None

    return check


def _float_check(values: Sequence[Any]) -> Sequence[Any] | None:
    if int in set(map(type, values)) and not -_FLOAT_EXACT <= min(values) <= max(values) <= _FLOAT_EXACT:
        return None  # Postgres would round an int this large from its digits: leave it to the text path
    return values


def _text_check(values: Sequence[Any]) -> Sequence[Any] | None:
    return values  # str by the typed read; no backslash in the slice: nothing to escape or refuse


def _json_check(values: Sequence[Any]) -> Sequence[Any] | None:
    if not set(map(type, values)) <= _JSON_CONTAINERS:
        return None  # a scalar: the text path writes it its own way
    from .routes import _fast_dumps, json_text  # what the text path writes (circular import)

    if _fast_dumps is not None:
        return list(map(bytes.decode, map(_fast_dumps, values)))  # TypeError past 64 bits: not this path
    return list(map(json_text, values))


def _column_check(column_type: str) -> Check | None:
    if column_type in _INT_RANGES:
        return _int_check(_INT_RANGES[column_type])
    if column_type == "double precision":
        return _float_check
    if column_type in _TEXT_TYPES:
        return _text_check
    if column_type in _JSON_TYPES:
        return _json_check
    return None


def typed_encoder(
    columns: Sequence[tuple[str, int, bool, str]], absent: Sequence[str], nulls: Sequence[str]
) -> TypedEncoder | None:
    """The typed-row encoder for columns given as :func:`shipper.copyrows.compile_encoder` takes
    them (``(name, fill, is_array, type)``; fill 0 id, 1 time, 2 whole payload, 3 a payload key),
    or None if a column's type rules a binary COPY out, or msgspec is not installed."""
    msgspec = _optional_msgspec()
    if msgspec is None:
        return None
    plan: list[tuple[int, Check | None, int]] = []  # (fill, the column's check, index among the keys read)
    wanted: list[tuple[str, str]] = []
    for name, fill, is_array, column_type in columns:
        if is_array:
            return None
        if fill == 0 and column_type != "uuid" or fill == 1 and (column_type != "timestamp with time zone" or name != PG_TIME):
            return None
        if fill == 3 and name in nulls:
            plan.append((-1, None, -1))
        elif fill == 3:
            check = _column_check(column_type)
            if check is None:
                return None
            plan.append((3, check, len(wanted)))
            wanted.append((name, column_kind(column_type)))
        else:
            plan.append((fill, None, -1))
    readers = _row_decoders(wanted, (*absent, *nulls))
    if readers is None:
        return None
    decode = readers[0]  # typed: an int column's key must hold a JSON integer, a text one a string
    astuple = msgspec.structs.astuple  # a struct's fields k0, k1, .. in order, the unwanted keys after

    def rows(events: Sequence[EventRow]) -> list[tuple[Any, ...]] | None:
        try:
            texts = list(map(_TEXT, events))
            if "\\" in "".join(texts):
                return None
            # ValidationError: a value off its column's type, or a key whose presence changes the shape
            decoded = list(map(decode, texts))
            # the wanted keys' values column by column: one tuple per event, transposed (0.20 us
            # an event at nine keys, against 0.49 us for an attrgetter per key and event)
            keys = list(zip(*map(astuple, decoded)))
            out: list[Any] = []
            for fill, check, index in plan:
                if fill == 0:
                    ids = list(map(_ID, events))
                    if not _canonical_uuids(ids):
                        return None
                    out.append(ids)
                elif fill == 1:
                    micros = list(map(_CREATED, events))
                    if set(map(type, micros)) != {int} or min(micros) < 0 or max(micros) >= MAX_US:
                        return None
                    out.append(list(map(operator.sub, micros, itertools.repeat(PG_EPOCH_US))))
                elif fill == 2:
                    out.append(texts)
                elif check is not None:
                    values = check(keys[index])
                    if values is None:
                        return None
                    out.append(values)
                else:
                    out.append(itertools.repeat(None))
            return list(zip(*out))
        except Exception:  # anything odd: the text encoders decide, event by event if need be
            return None

    def encode(events: Sequence[EventRow]) -> tuple[list[tuple[Any, ...]], list[EventRow], list[EventRow]]:
        """Each slice of :data:`CHUNK` events as typed rows if it can be, else left over."""
        typed: list[tuple[Any, ...]] = []
        done: list[EventRow] = []
        left: list[EventRow] = []
        for start in range(0, len(events), CHUNK):
            part = events[start:start + CHUNK]
            got = rows(part) if len(part) >= MIN_EVENTS else None
            if got is None:
                left += part
            else:
                typed += got
                done += part
        return typed, done, left

    return encode
