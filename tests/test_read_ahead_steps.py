"""A read-ahead routes a big batch in steps, and frees the batch sent before it.

While one batch is in flight, the loop's thread also feeds its COPY to the socket; routing the
next batch whole held the thread for milliseconds, and Postgres waited for data. So a read-ahead
routes STEP events at a time and joins the parts (shipper.rows.Routed.joined). What the batch
sends must not change: one COPY per table and kind, and the same rows in Postgres, refusals
included. These tests route the same batches whole and in steps and compare what lands.
"""

from __future__ import annotations

import asyncio
import gc
import json
import uuid
import weakref
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from outbox import Event, Outbox
from outbox.records import EventRows
from shipper import Batch, PostgresSink, Shipper
from shipper import readahead
from shipper.readahead import STEP
from sending import send_collecting

ROUTES = {"typed": "typed"}
TABLE = """
CREATE TABLE typed (
    id uuid PRIMARY KEY, created_at timestamptz NOT NULL,
    i8 bigint, s text, f8 double precision, j jsonb, d text DEFAULT 'dflt'
)"""
TABLES = ("typed", "command_calls", "outbox_events")


def _id(i: int) -> str:
    """The i-th of a run of canonical UUIDv7-shaped ids."""
    return str(uuid.UUID(int=(0x01A0 << 112) | (7 << 76) | (2 << 62) | i))


def _command(i: int) -> dict[str, Any]:
    return {"discord_uid": 10**17 + i, "player_name": f"p{i}", "command": "rank", "guild_id": 7, "channel_id": 8,
            "options": {"n": i}, "outcome": "ok", "latency_ms": i / 7}


def _mixed(n: int) -> list[Event]:
    """Typed-route, command and plain events, with slices the typed path declines (a backslash,
    a missing key, an int off its column's type) and events the route refuses."""
    events = []
    for i in range(n):
        if i % 5 == 0:
            topic, payload = "bot_events", {"i": i}
        elif i % 5 == 1:
            topic, payload = "command_calls", _command(i)
        else:
            topic, payload = "typed", {"i8": i, "s": f"n{i}", "f8": i / 3, "j": {"k": [i]}, "d": f"d{i}"}
            if i % 997 == 2:
                payload["s"] = "back\\slash\ttab"
            elif i % 1301 == 3:
                del payload["d"]
            elif i % 1777 == 4:
                payload["i8"] = 2**70  # off bigint: Postgres refuses the row
        text = json.dumps(payload, separators=(",", ":"))
        if topic == "typed" and i % 2003 == 7:
            text = "[1, 2]"  # not an object: the route cannot read it
        events.append(Event(i + 1, _id(i), topic, text, 1_700_000_000_000_000 + i))
    return events


async def _land(dsn: str, events: list[Event], *, steps: bool) -> dict[str, Any]:
    """Route ``events`` as one batch (whole, or in steps) and send it into fresh tables; return
    what each table holds, what was refused, and the batch's tables (name and kind)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DROP TABLE IF EXISTS typed; " + TABLE)
        sink = PostgresSink(dsn, routes=ROUTES)
        await sink.open()
        try:
            await sink.conn.execute("TRUNCATE outbox_ledger, outbox_events, command_calls")
            batch = Batch(str(uuid.uuid4()), 0, events[-1].seq, EventRows(events), router=sink.router)
            if steps:
                await readahead._route_in_steps(batch)
            shape = [(t.name, t.columns, t.records is not None) for t in batch.routed.tables]
            result, refused = await send_collecting(sink, batch)
        finally:
            await sink.close()
        landed = {t: [r[0] for r in await conn.fetch(f"SELECT (to_jsonb(x) - 'shipped_at')::text FROM {t} x ORDER BY id")] for t in TABLES}
        return {"landed": landed, "refused": refused, "shipped": result.shipped, "shape": shape}
    finally:
        await conn.close()


async def test_a_mixed_batch_routed_in_steps_lands_as_it_does_routed_whole(pg_dsn: str) -> None:
    events = _mixed(3 * STEP + 500)
    whole = await _land(pg_dsn, events, steps=False)
    stepped = await _land(pg_dsn, events, steps=True)
    assert stepped["landed"] == whole["landed"]
    assert stepped["refused"] == whole["refused"]
    assert stepped["shipped"] == whole["shipped"]
    assert len(whole["refused"]) >= 2  # the test means something: refusals, and rows in every table
    assert all(whole["landed"][t] for t in TABLES)
    # joined: one table per destination, set of columns and kind, as whole routing makes
    assert len(stepped["shape"]) == len(set(stepped["shape"])) == len(whole["shape"])


async def test_uniform_steps_join_into_the_tables_the_whole_batch_makes(pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(TABLE)
    finally:
        await conn.close()
    sink = PostgresSink(pg_dsn, routes=ROUTES)
    await sink.open()
    try:
        for topic in ("typed", "bot_events", "command_calls"):
            events = EventRows([Event(i + 1, _id(i), topic,
                                      json.dumps(_command(i) if topic == "command_calls" else {"i8": i, "s": "x", "f8": 0.5,
                                                 "j": [i], "d": "y"}), 1_700_000_000_000_000 + i)
                                for i in range(2 * STEP + 77)])
            whole = Batch("o", 0, len(events), events, router=sink.router)
            stepped = Batch("o", 0, len(events), events, router=sink.router)
            await readahead._route_in_steps(stepped)
            a, b = whole.routed.tables, stepped.routed.tables
            assert [(t.name, t.columns) for t in b] == [(t.name, t.columns) for t in a], topic
            assert len(b) == 1, topic
            assert b[0].records == a[0].records, topic
            assert b[0].copy_text() == a[0].copy_text(), topic
            assert list(b[0].events) == list(events), topic
    finally:
        await sink.close()


async def test_a_sent_batch_is_freed_by_the_next_read_ahead_and_nothing_is_kept_after(outbox_path: Path, pg_dsn: str) -> None:
    freed_by: list[str] = []
    kept: list[weakref.ref[Batch]] = []
    real_read = readahead.ReadAhead.read_batch

    async def read_batch(self: readahead.ReadAhead, after: int, limit: int, *, ahead: bool = False,
                         spent: Batch | None = None) -> Batch | None:
        if spent is not None:
            freed_by.append(f"{spent.last_seq}<{after}")
            kept.append(weakref.ref(spent))
        del spent
        return await real_read(self, after, limit, ahead=ahead)

    async with Outbox(outbox_path) as ob:
        for i in range(2500):
            await ob.append("bot_events", {"i": i})
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(readahead.ReadAhead, "read_batch", read_batch)
        async with Shipper(outbox_path, pg_dsn, batch_size=500, max_batch_bytes=0) as s:
            await s.drain(timeout=60)
            assert s.stats.shipped == 2500
            assert s._spent is None  # nothing held once the backlog is gone
    assert freed_by  # batches were handed to the read-ahead after them ...
    assert all(int(a) < int(b) for a, b in (f.split("<") for f in freed_by))  # ... each one sent before it
    gc.collect()
    assert all(ref() is None for ref in kept)  # and nothing keeps them


def test_steps_are_about_equal_and_none_is_short() -> None:
    async def shapes(n: int) -> list[int]:
        sizes: list[int] = []

        class Router:
            def route(self, events: Any) -> Any:
                sizes.append(len(events))
                from shipper.rows import Routed
                return Routed([], [])

        batch = Batch("o", 0, n, EventRows([(i + 1, "id", "t", "{}", 0) for i in range(n)]), router=Router())  # type: ignore[arg-type]
        await readahead._route_in_steps(batch)
        return sizes

    for n in (STEP + 1, 2 * STEP, 5000, 7 * STEP + 3):
        sizes = asyncio.run(shapes(n))
        assert sum(sizes) == n and len(sizes) == -(-n // STEP)
        assert STEP // 2 <= min(sizes) and max(sizes) <= STEP  # none short: a short slice would go as text
