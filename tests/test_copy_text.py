"""The fast path sends outbox_events rows in COPY's text format: what lands must be exact."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbox import Event, Outbox, OutboxReader, PayloadError
from shipper import Batch, PostgresSink
from shipper.rows import events_copy_text

from test_jsonb_property import payloads

# Printable topics, with the characters COPY's text format treats specially among them.
topics = st.text(alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Zs")) | st.sampled_from("\\.|"), min_size=1, max_size=12)


def test_escapes_and_timestamps() -> None:
    rows = [
        Event(1, "01a00000-0000-7000-8000-000000000001", "a\\b", '{"s":"x\\ny\\t\\\\"}', 1_700_000_000_123_456),
        Event(2, "01a00000-0000-7000-8000-000000000002", "t", '{\n\t"k": 1\r}', 0),
    ]
    text = events_copy_text(rows)
    assert text == (
        b'01a00000-0000-7000-8000-000000000001\ta\\\\b\t{"s":"x\\\\ny\\\\t\\\\\\\\"}\t2023-11-14 22:13:20.123456+00\n'
        b'01a00000-0000-7000-8000-000000000002\tt\t{\\n\\t"k": 1\\r}\t1970-01-01 00:00:00.000000+00\n'
    )


def test_rows_it_cannot_write_fall_back_to_binary() -> None:
    row = (1, "01a00000-0000-7000-8000-000000000001", "t", "{}")
    assert events_copy_text([Event(*row, -1)]) is None  # before 1970
    assert events_copy_text([Event(*row, 253_402_300_800_000_000)]) is None  # past 9999
    assert events_copy_text([Event(*row, 1.5)]) is None  # type: ignore[arg-type]  # not an integer
    assert events_copy_text([Event(1, row[1], "t", '"\ud800"', 1)]) is None  # not UTF-8


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(batch=st.lists(st.tuples(topics, payloads), min_size=1, max_size=25))
def test_shipped_rows_equal_the_outbox(pg_dsn: str, batch: list[tuple[str, dict[str, Any]]]) -> None:
    asyncio.run(_check(pg_dsn, batch))


async def _check(dsn: str, batch: list[tuple[str, dict[str, Any]]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.db"
        async with Outbox(path) as ob:
            for topic, payload in batch:
                try:
                    await ob.append(topic, payload)
                except PayloadError:
                    pass
        async with OutboxReader(path) as reader:
            events = await reader.read_pending(100)
            outbox_id = reader.outbox_id
    if not events:
        return
    sink = PostgresSink(dsn)
    await sink.open()
    try:
        await sink.conn.execute("TRUNCATE outbox_events, outbox_ledger")
        sent = Batch(outbox_id, 0, events[-1].seq, events)
        assert sent.routed.tables[0].copy_text() is not None  # the text path is the one tested
        result = await sink.send(sent, _refuse_all)
        assert result.shipped == len(events)
        await _same_in_postgres(sink.conn, events)
    finally:
        await sink.close()


async def _refuse_all(failures: list[tuple[Event, str]]) -> None:
    assert not failures, failures


async def _same_in_postgres(conn: asyncpg.Connection, events: list[Event]) -> None:
    rows = await conn.fetch(
        "SELECT id::text AS id, topic, payload::text AS payload,"
        " (extract(epoch FROM created_at) * 1000000)::bigint AS us FROM outbox_events"
    )
    got = {r["id"]: (r["topic"], r["payload"], r["us"]) for r in rows}
    assert len(got) == len(events)
    for event in events:
        expected = await conn.fetchval("SELECT $1::jsonb::text", event.payload)
        assert got[event.id] == (event.topic, expected, event.created_at)


# -- a route's rows: the compiled encoder must write exactly what the general path does ---------

from shipper.routes import Column, TableSpec  # noqa: E402
from shipper.rows import Routed, rows_copy_text  # noqa: E402
from shipper.routes import text_tables  # noqa: E402

ROUTE_COLUMNS = [
    Column("id", "uuid", True),
    Column("n", "bigint"),
    Column("x", "double precision"),
    Column("s", "text"),
    Column("tags", "text[]", is_array=True),
    Column("d", "text", has_default=True),
    Column("payload", "jsonb"),
    Column("created_at", "timestamp with time zone", True),
]
scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=8)
route_values = scalars | st.lists(scalars, max_size=3) | st.dictionaries(st.text(max_size=3), scalars, max_size=2)
route_payloads = st.dictionaries(st.sampled_from(["n", "x", "s", "tags", "d", "other"]), route_values, max_size=6)


@settings(max_examples=150, deadline=None)
@given(batch=st.lists(route_payloads, min_size=1, max_size=12), times=st.lists(st.integers(-10**12, 2 * 10**15), min_size=12, max_size=12))
def test_route_encoder_writes_what_the_general_path_writes(batch: list[dict[str, Any]], times: list[int]) -> None:
    import json

    spec = TableSpec.build("r", ROUTE_COLUMNS, ("id",))
    events = [
        Event(i, f"01a00000-0000-7000-8000-{i:012d}", "r", json.dumps(p, ensure_ascii=False, separators=(",", ":")), times[i])
        for i, p in enumerate(batch)
    ]
    from shipper.routes import Router

    router = Router({"r": "r"})
    router.specs = {"r": spec}
    fast = router.route(events)
    general = Routed([], [])
    text_tables(spec, events, general)
    assert [e.id for e, _ in fast.refused] == [e.id for e, _ in general.refused]

    def by_columns(routed: Routed) -> dict[tuple[str, ...], dict[str, bytes | None]]:
        out: dict[tuple[str, ...], dict[str, bytes | None]] = {}
        for table in routed.tables:
            for event, row in zip(table.events, table.rows):
                out.setdefault(table.columns, {})[event.id] = rows_copy_text([row])
        return out

    assert by_columns(fast) == by_columns(general)
    for table in fast.tables:  # the COPY text sent is the rows' text, line for line
        assert table.copy_text() == rows_copy_text(table.rows)
