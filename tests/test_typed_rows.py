"""A route's batch sent as typed rows in a binary COPY lands exactly as its COPY text would.

shipper.typedrows builds a uniform slice's rows as typed values, which asyncpg encodes in binary
and Postgres stores without parsing; any slice it declines goes to the text encoders. Whichever
way a batch goes, what lands in Postgres (and what is refused, and why) must be the same: these
tests ship the same events both ways into a real table and compare the rows Postgres holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import shipper.routes as routes
from outbox import Event, Outbox
from shipper import Batch, PostgresSink, Shipper
from shipper.routes import Column, TableSpec
from shipper.typedrows import _canonical_uuids
from sending import send_collecting

TABLE = """
CREATE TABLE typed (
    id uuid PRIMARY KEY,
    created_at timestamptz NOT NULL,
    payload jsonb,
    i8 bigint, i4 integer, i2 smallint, f8 double precision,
    s text NOT NULL DEFAULT 'none', vc varchar(6), ch char(4),
    j jsonb, js json,
    d text DEFAULT 'dflt'
)"""
KEYS = ["i8", "i4", "i2", "f8", "s", "vc", "ch", "j", "js"]
ROUTES = {"typed": "typed"}

# Strings with what JSON and COPY escape (quote, backslash, tab, newline), and what they do not.
texts = st.text(alphabet=st.sampled_from(list("ab é\u2028\x7f{}[],:\"\\\t\n") + ["\U0001f600", "\x00"]), max_size=8)
ints = st.integers(-(2**64), 2**64) | st.sampled_from([2**63 - 1, -(2**63), 2**31, -(2**31) - 1, 2**15, 2**53 + 1, -(2**53)])
floats = st.floats(allow_nan=False, allow_infinity=False) | st.sampled_from([-0.0, 5e-324, 1.7976931348623157e308, 0.1])
scalars = st.none() | st.booleans() | ints | floats | texts
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3), max_leaves=6)
by_key: dict[str, st.SearchStrategy[Any]] = {
    "i8": st.integers(-(2**63), 2**63 - 1), "i4": st.integers(-(2**31), 2**31 - 1), "i2": st.integers(-(2**15), 2**15 - 1),
    "f8": st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(2**53), 2**53),
    "s": st.text(alphabet="abcé#0 ", max_size=8), "vc": st.text(alphabet="abc", max_size=6), "ch": st.text(alphabet="xy", max_size=4),
    "j": st.dictionaries(st.text(alphabet="ab", max_size=2), json_values, max_size=2) | st.lists(json_values, max_size=2),
    "js": st.dictionaries(st.text(alphabet="ab", max_size=2), json_values, max_size=2),
}
odd_values = {"i8": ints, "i4": ints, "i2": ints, "f8": ints | floats, "s": texts, "vc": texts, "ch": texts,
              "j": json_values, "js": json_values}


@contextlib.contextmanager
def typed_path(on: bool) -> Iterator[None]:
    """Let routing build typed rows (the default) or not (every batch as COPY text)."""
    saved = routes.typed_encoder
    if not on:
        routes.typed_encoder = lambda *args: None  # type: ignore[assignment]
    try:
        yield
    finally:
        routes.typed_encoder = saved


def _events(payloads: list[dict[str, Any]], times: list[int]) -> list[Event]:
    return [
        Event(i + 1, f"01a00000-0000-7000-8000-{i:012d}", "typed", json.dumps(p, ensure_ascii=False, separators=(",", ":")), times[i])
        for i, p in enumerate(payloads)
    ]


async def _ship(dsn: str, events: list[Event], *, typed: bool) -> tuple[list[str], list[tuple[str, str]], list[bool]]:
    """Ship ``events`` into a fresh ``typed`` table; return its rows (as JSON text, in id
    order), the refused events (id, reason) and which tables went as typed rows."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS typed; " + TABLE)
        with typed_path(typed):
            sink = PostgresSink(dsn, routes=ROUTES)
            await sink.open()
            try:
                await sink.conn.execute("TRUNCATE outbox_ledger")
                batch = Batch(str(uuid.uuid4()), 0, events[-1].seq, events, router=sink.router)
                kinds = [t.records is not None for t in batch.routed.tables]
                _, refused = await send_collecting(sink, batch)
            finally:
                await sink.close()
        rows = [r[0] for r in await conn.fetch("SELECT row_to_json(t)::text FROM typed t ORDER BY id")]
        return rows, refused, kinds
    finally:
        await conn.close()


@st.composite
def batches(draw: st.DrawFn) -> tuple[list[dict[str, Any]], list[int]]:
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, min_size=1, max_size=len(KEYS)))
    odd = draw(st.integers(0, 3)) == 0  # a quarter of batches hold some value off its column's type
    n = draw(st.integers(24, 60))  # shipper.columnar.MIN_EVENTS and up: a slice the typed path takes
    payloads = [{k: draw(odd_values[k] if odd and draw(st.integers(0, 15)) == 0 else by_key[k]) for k in keys} for _ in range(n)]
    edges = st.sampled_from([0, 999_999, 10**6, 253_402_300_799_999_999])
    times = draw(st.lists(st.integers(10**6, 2 * 10**15) | edges, min_size=n, max_size=n))
    return payloads, times


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
@given(batch=batches())
def test_typed_rows_land_what_copy_text_lands(pg_dsn: str, batch: tuple[list[dict[str, Any]], list[int]]) -> None:
    events = _events(*batch)
    typed = asyncio.run(_ship(pg_dsn, events, typed=True))
    text = asyncio.run(_ship(pg_dsn, events, typed=False))
    assert not any(text[2]), "the text run must not build typed rows"
    assert typed[:2] == text[:2]


async def test_a_uniform_batch_goes_as_typed_rows_and_lands_exactly(pg_dsn: str) -> None:
    payloads = [{"i8": 2**63 - 1 - i, "i4": -(2**31), "i2": 2**15 - 1, "f8": 0.1 * i, "s": f"é{i}", "vc": "abc", "ch": "xy",
                 "j": {"a": [i, None, "x"]}, "js": {"b": 1.5}} for i in range(40)]
    events = _events(payloads, [1_796_287_423_264_185 + i for i in range(40)])
    rows, refused, kinds = await _ship(pg_dsn, events, typed=True)
    assert kinds == [True] and not refused
    first = json.loads(rows[0])
    assert first == {
        "id": events[0].id, "created_at": "2026-12-03T08:43:43.264185+00:00", "payload": json.loads(events[0].payload),
        "i8": 2**63 - 1, "i4": -(2**31), "i2": 2**15 - 1, "f8": 0.0, "s": "é0", "vc": "abc", "ch": "xy  ",
        "j": {"a": [0, None, "x"]}, "js": {"b": 1.5}, "d": "dflt",
    }
    assert [json.loads(r)["f8"] for r in rows] == [0.1 * i for i in range(40)]


async def test_typed_rows_land_the_same_where_asyncpg_lacks_the_one_trip_copy(pg_dsn: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The typed rows carry the time as Postgres's own microseconds, sent as an int8 on the one-trip
    path; statement by statement it goes back through the connection's timestamptz codec."""
    payloads = [{"i8": i, "s": f"s{i}", "f8": i / 3} for i in range(40)]
    times = [0, 999_999, 253_402_300_799_999_999, *(1_796_287_423_264_185 + 7 * i for i in range(37))]
    events = _events(payloads, times)
    one_trip = await _ship(pg_dsn, events, typed=True)
    monkeypatch.setattr("shipper.pgcopy.supports_one_trip", lambda conn: False)
    by_statement = await _ship(pg_dsn, events, typed=True)
    text = await _ship(pg_dsn, events, typed=False)
    assert one_trip[2] == by_statement[2] == [True] and not text[2][0]
    assert one_trip[:2] == by_statement[:2] == text[:2]
    assert json.loads(one_trip[0][0])["created_at"] == "1970-01-01T00:00:00+00:00"


async def test_a_slice_with_a_backslash_goes_as_text_and_the_rest_as_typed_rows(pg_dsn: str) -> None:
    payloads = [{"s": "plain", "i8": i} for i in range(1024)]
    payloads[700]["s"] = 'say "hi"'  # JSON writes the quotes with backslashes: that slice goes as text
    events = _events(payloads, [10**15 + i for i in range(1024)])
    rows, refused, kinds = await _ship(pg_dsn, events, typed=True)
    assert sorted(kinds) == [False, True] and not refused
    assert [json.loads(r)["s"] for r in rows] == [p["s"] for p in payloads]


async def test_a_row_postgres_refuses_in_a_binary_copy_is_set_aside_as_in_text(pg_dsn: str) -> None:
    payloads = [{"s": "ok", "vc": "abcdef" if i != 30 else "abcdefg"} for i in range(50)]  # varchar(6)
    events = _events(payloads, [10**15 + i for i in range(50)])
    rows, refused, kinds = await _ship(pg_dsn, events, typed=True)
    assert kinds == [True]
    assert len(rows) == 49
    assert [event_id for event_id, _ in refused] == [events[30].id]
    assert "value too long for type character varying(6)" in refused[0][1]
    assert (rows, refused) == (await _ship(pg_dsn, events, typed=False))[:2]  # as the text path refuses it


@pytest.mark.parametrize("column_type", ["real", "numeric", "boolean", "text[]", "citext", "timestamp with time zone"])
def test_a_column_type_binary_input_could_read_otherwise_keeps_the_route_on_text(column_type: str) -> None:
    columns = [Column("id", "uuid", True), Column("s", "text"), Column("v", column_type, is_array=column_type.endswith("[]")),
               Column("created_at", "timestamp with time zone", True)]
    spec = TableSpec.build("t", columns, ("id",))
    assert spec.typed_encoder(()) is None
    plain = TableSpec.build("t", [c for c in columns if c.name != "v"], ("id",))
    assert plain.typed_encoder(()) is not None


def test_ids_and_times_out_of_the_canonical_range_keep_the_slice_on_text() -> None:
    spec = TableSpec.build("t", [Column("id", "uuid", True), Column("n", "bigint"), Column("created_at", "timestamp with time zone", True)], ("id",))
    encode = spec.typed_encoder(())
    assert encode is not None
    good = [Event(i + 1, f"01a00000-0000-7000-8000-{i:012d}", "t", f'{{"n":{i}}}', 10**15) for i in range(30)]
    assert len(encode(good)[0]) == 30
    for bad in (
        good[5]._replace(id="01a00000-0000-7000-8000-0000-00000005"),  # hyphens where Postgres takes none
        good[5]._replace(id="{01a00000-0000-7000-8000-000000000005}"),
        good[5]._replace(created_at=-1),
        good[5]._replace(created_at=253_402_300_800_000_000),
        good[5]._replace(payload='{"n":9223372036854775808}'),  # past bigint
        good[5]._replace(payload='{"n":true}'),
        good[5]._replace(payload='{"n":1,"created_at":2}'),  # harmless extra key: still typed
    ):
        rows, done, left = encode([*good[:5], bad, *good[6:]])
        if bad.payload.endswith('"created_at":2}'):
            assert len(done) == 30
        else:
            assert (rows, done, len(left)) == ([], [], 30), bad


async def test_typed_rows_ship_exactly_once_direct_and_through_pgbouncer(
    pg_dsn: str, route_dsn: Callable[[str], str], outbox_path: Path
) -> None:
    built: list[int] = []
    real = routes.typed_encoder

    def counting(*args: Any) -> Any:
        encode = real(*args)
        if encode is None:
            return None

        def wrapped(events: Any) -> Any:
            out = encode(events)
            built.append(len(out[0]))
            return out

        return wrapped

    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(TABLE)
    finally:
        await conn.close()
    async with Outbox(outbox_path) as ob:
        ids = [await ob.append("typed", {"i8": i, "s": f"n{i}", "f8": i / 3, "j": {"k": [i]}}) for i in range(600)]
    routes.typed_encoder = counting  # type: ignore[assignment]
    try:
        async with Shipper(outbox_path, route_dsn(pg_dsn), routes=ROUTES) as shipper:
            await shipper.drain(timeout=60)
            assert shipper.stats.dead == 0
    finally:
        routes.typed_encoder = real
    assert sum(built) == 600  # every event went as a typed row
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT id::text, i8, s, f8, j::text FROM typed ORDER BY i8")
    finally:
        await conn.close()
    assert [(r[0], r[1], r[2], r[3], r[4]) for r in rows] == [(ids[i], i, f"n{i}", i / 3, f'{{"k": [{i}]}}') for i in range(600)]


def test_a_key_whose_presence_changes_the_shape_keeps_the_slice_on_text() -> None:
    """Events built for the layout where ``m`` is missing (written NULL) and ``d`` too (left to its
    default): one event holding either key is not of that layout, so the slice is not typed."""
    columns = [Column("id", "uuid", True), Column("n", "bigint"), Column("m", "bigint"), Column("d", "text", has_default=True),
               Column("created_at", "timestamp with time zone", True)]
    spec = TableSpec.build("t", columns, ("id",))
    encode = spec.typed_encoder(("m", "d"))
    assert encode is not None
    good = [Event(i + 1, f"01a00000-0000-7000-8000-{i:012d}", "t", f'{{"n":{i}}}', 10**15) for i in range(30)]
    assert len(encode(good)[1]) == 30
    for payload in ('{"n":5,"m":7}', '{"n":5,"m":null}', '{"n":5,"d":"x"}', '{"n":5,"d":{}}'):
        rows, done, left = encode([*good[:5], good[5]._replace(payload=payload), *good[6:]])
        assert (rows, done, len(left)) == ([], [], 30), payload


_CANONICAL = re.compile("(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\n)*")


@st.composite
def spelled_ids(draw: st.DrawFn) -> list[str]:
    """A few UUIDs, some respelled: a character changed, added or dropped (hex, hyphen, newline, other)."""
    ids = [str(uuid.UUID(int=draw(st.integers(0, 2**128 - 1)))) for _ in range(draw(st.integers(1, 4)))]
    for i in range(len(ids)):
        if draw(st.booleans()):
            chars = list(ids[i].upper() if draw(st.booleans()) else ids[i])
            for _ in range(draw(st.integers(1, 3))):
                at, char = draw(st.integers(0, len(chars))), draw(st.sampled_from(list("0aF-\n{} gé")))
                how = draw(st.sampled_from(["change", "add", "drop"]))
                if how == "add" or not chars:
                    chars.insert(at, char)
                elif how == "change":
                    chars[min(at, len(chars) - 1)] = char
                else:
                    del chars[min(at, len(chars) - 1)]
            ids[i] = "".join(chars)
    return ids


@settings(max_examples=3000, deadline=None)
@given(ids=spelled_ids())
def test_the_canonical_id_check_agrees_with_the_canonical_pattern(ids: list[str]) -> None:
    assert _canonical_uuids(ids) == (_CANONICAL.fullmatch("\n".join(ids) + "\n") is not None)
