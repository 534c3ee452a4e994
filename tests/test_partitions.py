"""Partitioned built-in tables against a real Postgres: old months made on arrival, retention whole."""

from __future__ import annotations

import asyncio
import datetime
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from outbox import Outbox, OutboxReader
from outbox.maintenance import import_records
from shipper import SCHEMA_VERSION, PostgresSink, SchemaError, Shipper, migrate
from shipper.partitions import period_end, period_start

DAY_US = 86_400_000_000


async def partitions(dsn: str, table: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = $1::regclass ORDER BY 1",
            table,
        )
        return [r[0] for r in rows]
    finally:
        await conn.close()


async def scalar(dsn: str, sql: str) -> object:
    conn = await asyncpg.connect(dsn)
    try:
        return await conn.fetchval(sql)
    finally:
        await conn.close()


def month(offset: int) -> datetime.datetime:
    """The 15th of the month ``offset`` months before this one, UTC."""
    now = datetime.datetime.now(datetime.timezone.utc)
    index = now.year * 12 + now.month - 1 - offset
    return datetime.datetime(index // 12, index % 12 + 1, 15, 12, tzinfo=datetime.timezone.utc)


async def import_old(path: Path, moments: list[datetime.datetime], topic: str = "clicks") -> list[str]:
    """Events with the given creation times, as an `outbox import` of an old export brings them."""
    ids = [str(uuid.uuid4()) for _ in moments]
    payload = {"discord_uid": 1, "command": "queue"} if topic == "command_calls" else {"i": 1}

    async def lines() -> AsyncIterator[tuple[int, str]]:
        for n, (event_id, moment) in enumerate(zip(ids, moments), 1):
            yield n, json.dumps({"id": event_id, "topic": topic, "payload": payload, "created_at": moment.isoformat()})

    async with OutboxReader(path, create=True) as reader:
        await import_records(reader, lines())
    return ids


async def test_migrate_partitions_the_built_in_tables(pg_dsn: str) -> None:
    await migrate(pg_dsn, partition="monthly")
    for table in ("outbox_events", "command_calls"):
        assert await scalar(pg_dsn, f"SELECT relkind::text FROM pg_class WHERE oid = '{table}'::regclass") == "p"
        made = await partitions(pg_dsn, table)
        assert len(made) == 3, made  # this month and two ahead
        key = await scalar(pg_dsn, f"SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = '{table}_pkey'")
        assert key == "PRIMARY KEY (id, created_at)"
    assert await migrate(pg_dsn, partition="monthly") == SCHEMA_VERSION  # again: nothing to do
    assert await migrate(pg_dsn) == SCHEMA_VERSION  # and a plain migrate leaves them partitioned
    with pytest.raises(SchemaError, match="already partitioned monthly"):
        await migrate(pg_dsn, partition="daily")


async def test_events_of_several_old_months_make_their_partitions(outbox_path: Path, pg_dsn: str) -> None:
    await migrate(pg_dsn, partition="monthly")
    before = set(await partitions(pg_dsn, "outbox_events"))
    old = await import_old(outbox_path, [month(14), month(5), month(5), month(3)])
    commands = await import_old(outbox_path, [month(7)], topic="command_calls")
    async with Outbox(outbox_path) as ob:
        await ob.append("clicks", {"now": True})
    async with Shipper(outbox_path, pg_dsn, retention_s=3650 * 86400) as s:  # old events kept for the replay
        await s.drain(timeout=30)
        assert s.stats.dead == 0 and s.stats.shipped == 6
    made = set(await partitions(pg_dsn, "outbox_events")) - before
    assert made == {f"outbox_events_p{month(n):%Y%m}01" for n in (14, 5, 3)}
    assert f"command_calls_p{month(7):%Y%m}01" in await partitions(pg_dsn, "command_calls")
    assert await scalar(pg_dsn, f"SELECT count(*) FROM outbox_events_p{month(5):%Y%m}01") == 2
    # a replay goes through ON CONFLICT (id, created_at): nothing twice
    from shipper import replay, verify

    async with OutboxReader(outbox_path) as reader:
        again = await replay(reader, pg_dsn)
        assert (again.selected, again.inserted) == (6, 0)
        await _drop_rows(pg_dsn, old[0])
        restored = await replay(reader, pg_dsn)
        assert restored.inserted == 1
        assert (await verify(reader, pg_dsn)).ok
    assert sorted(str(r) for r in await _ids(pg_dsn, "command_calls")) == commands


async def test_retention_drops_only_whole_old_partitions(outbox_path: Path, pg_dsn: str) -> None:
    await migrate(pg_dsn, partition="daily")
    # "now" is yesterday at 18:00 UTC, not the clock's now: the cutoff (10.5 days back) must
    # fall inside day 10's partition, which it does only for a time of day after noon (the
    # test failed every morning, UTC)
    midnight = datetime.datetime.now(datetime.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    now = midnight - datetime.timedelta(hours=6)
    moments = [now - datetime.timedelta(days=d) for d in (40, 12, 11, 10, 9)]
    await import_old(outbox_path, moments)
    async with Shipper(outbox_path, pg_dsn) as s:  # no retention: everything stays
        await s.drain(timeout=30)
    assert await scalar(pg_dsn, "SELECT count(*) FROM outbox_events") == 5
    sink = PostgresSink(pg_dsn, pg_retention_s=10.5 * 86400)
    await sink.open()
    try:
        now_us = int(now.timestamp() * 1_000_000)
        dropped = await sink.partitions.housekeeping(sink.conn, now_us=now_us)
    finally:
        await sink.close()
    cutoff = now_us - int(10.5 * DAY_US)
    for day in (40, 12, 11):  # wholly before the cutoff
        name = f"outbox_events_p{now - datetime.timedelta(days=day):%Y%m%d}"
        assert name in dropped
    kept = f"outbox_events_p{now - datetime.timedelta(days=10):%Y%m%d}"  # straddles the cutoff: kept whole
    start = period_start("daily", now_us - 10 * DAY_US)
    assert start < cutoff < period_end("daily", start) and kept not in dropped
    assert kept in await partitions(pg_dsn, "outbox_events")
    assert await scalar(pg_dsn, "SELECT count(*) FROM outbox_events") == 2  # days 10 and 9
    assert not any(name.startswith("command_calls") and name >= kept.replace("outbox_events", "command_calls") for name in dropped)


async def test_retention_through_the_shippers_housekeeping(outbox_path: Path, pg_dsn: str) -> None:
    await migrate(pg_dsn, partition="weekly")
    now = datetime.datetime.now(datetime.timezone.utc)
    await import_old(outbox_path, [now - datetime.timedelta(days=200), now - datetime.timedelta(days=1)])
    async with Shipper(outbox_path, pg_dsn, pg_retention_s=90 * 86400, housekeeping_interval=0.05) as s:
        await s.drain(timeout=30)
        for _ in range(600):  # up to 30 s: housekeeping runs every 0.05 s, but a loaded machine is slow
            if await scalar(pg_dsn, "SELECT count(*) FROM outbox_events") == 1:
                break
            await asyncio.sleep(0.05)
    assert await scalar(pg_dsn, "SELECT count(*) FROM outbox_events") == 1
    names = await partitions(pg_dsn, "outbox_events")
    assert len(names) >= 5  # this week's, the last day's, and four ahead


async def test_migrate_refuses_tables_with_rows_unless_told_to_move_them(outbox_path: Path, pg_dsn: str) -> None:
    await import_old(outbox_path, [month(2), month(1)])
    async with Outbox(outbox_path) as ob:
        await ob.append("command_calls", {"discord_uid": 5, "command": "x"})
    async with Shipper(outbox_path, pg_dsn, retention_s=3650 * 86400) as s:
        await s.drain(timeout=30)
    with pytest.raises(SchemaError, match="outbox_events already holds rows .* --move-rows"):
        await migrate(pg_dsn, partition="monthly")
    assert await scalar(pg_dsn, "SELECT relkind::text FROM pg_class WHERE oid = 'outbox_events'::regclass") == "r"
    await migrate(pg_dsn, partition="monthly", move_rows=True)
    assert await scalar(pg_dsn, "SELECT relkind::text FROM pg_class WHERE oid = 'outbox_events'::regclass") == "p"
    assert await scalar(pg_dsn, "SELECT count(*) FROM outbox_events") == 2
    assert await scalar(pg_dsn, "SELECT count(*) FROM command_calls") == 1
    assert f"outbox_events_p{month(2):%Y%m}01" in await partitions(pg_dsn, "outbox_events")
    from shipper import verify

    async with OutboxReader(outbox_path) as reader:
        assert (await verify(reader, pg_dsn)).ok


async def _drop_rows(dsn: str, event_id: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("DELETE FROM outbox_events WHERE id = $1::uuid", event_id)
    finally:
        await conn.close()


async def _ids(dsn: str, table: str) -> list[object]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r[0] for r in await conn.fetch(f"SELECT id FROM {table}")]
    finally:
        await conn.close()
