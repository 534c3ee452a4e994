"""The shipper against a real Postgres: routing, exactly once, dead letters, outages, two shippers."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.request
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from outbox import Outbox, OutboxReader
from pgbouncer import PgBouncer
from pgproxy import PgProxy
from pgserver import PgServer
from shipper import SCHEMA_VERSION, InMemorySink, PostgresSink, SchemaError, Shipper, migrate
from shipper.errors import LeaseLost, classify
from shipper.sink import Batch, Sink

COMMAND = {
    "discord_uid": 123456789012345678,
    "player_name": "Zeke",
    "command": "leaderboard",
    "options": {"page": 2},
    "guild_id": 987654321098765432,
    "channel_id": 111111111111111111,
    "outcome": "ok",
    "latency_ms": 3.25,
}


async def append_many(path: Path, n: int, topic: str = "clicks", **extra: Any) -> list[str]:
    async with Outbox(path) as ob:
        return [await ob.append(topic, {"i": i, **extra}) for i in range(n)]


async def ids_in(dsn: str, table: str = "outbox_events") -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r[0] for r in await conn.fetch(f"SELECT id::text FROM {table}")]
    finally:
        await conn.close()


async def test_events_route_to_their_tables_with_typed_columns(outbox_path: Path, pg_dsn: str) -> None:
    async with Outbox(outbox_path) as ob:
        plain = await ob.append("clicks", {"x": 1, "nested": {"é": [1, None]}})
        command = await ob.append("command_calls", COMMAND)
    async with Shipper(outbox_path, pg_dsn) as s:
        assert await s.drain(timeout=30) == 2
    conn = await asyncpg.connect(pg_dsn)
    try:
        row = await conn.fetchrow("SELECT id::text, topic, payload::text, created_at FROM outbox_events")
        assert row["id"] == plain and row["topic"] == "clicks"
        assert json.loads(row["payload"]) == {"x": 1, "nested": {"é": [1, None]}}
        cmd = await conn.fetchrow("SELECT * FROM command_calls")
        assert str(cmd["id"]) == command
        assert (cmd["discord_uid"], cmd["player_name"], cmd["command"]) == (123456789012345678, "Zeke", "leaderboard")
        assert (cmd["guild_id"], cmd["channel_id"], cmd["outcome"]) == (987654321098765432, 111111111111111111, "ok")
        assert json.loads(cmd["options"]) == {"page": 2} and cmd["latency_ms"] == 3.25
        assert abs((cmd["created_at"] - row["created_at"]).total_seconds()) < 5
        assert await conn.fetchval("SELECT count(*) FROM outbox_events WHERE topic = 'command_calls'") == 0
    finally:
        await conn.close()
    async with OutboxReader(outbox_path) as reader:
        status = await reader.status()
        assert (status.pending, status.shipped, status.dead) == (0, 2, 0)


async def test_migrate_is_idempotent_and_versioned(pg_dsn: str) -> None:
    assert await migrate(pg_dsn) == SCHEMA_VERSION == 3
    assert await migrate(pg_dsn) == SCHEMA_VERSION
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT max(version) FROM outbox_schema_version") == SCHEMA_VERSION
        await conn.execute("INSERT INTO outbox_schema_version(version) VALUES (99)")
    finally:
        await conn.close()
    with pytest.raises(SchemaError, match="version 99"):
        await migrate(pg_dsn)


async def test_a_repeated_batch_is_refused_whole_by_the_ledger(outbox_path: Path, pg_dsn: str) -> None:
    """A shipper that crashed after Postgres committed but before the outbox noted it ships nothing twice."""
    ids = await append_many(outbox_path, 300)
    async with Shipper(outbox_path, pg_dsn, batch_size=100) as s:
        await s.drain(timeout=30)
    async with OutboxReader(outbox_path) as reader:
        await reader.set_cursor(0)  # as if every local note of progress was lost
    more = await append_many(outbox_path, 50)
    async with Shipper(outbox_path, pg_dsn, batch_size=100) as s:
        await s.drain(timeout=30)
    stored = await ids_in(pg_dsn)
    assert sorted(stored) == sorted(ids + more)


async def test_reimported_events_with_known_ids_take_the_careful_path(tmp_path: Path, pg_dsn: str) -> None:
    """The same ids from another outbox (an import) are skipped by ON CONFLICT, not duplicated or lost."""
    first, second = tmp_path / "a.db", tmp_path / "b.db"
    ids = await append_many(first, 40)
    async with Shipper(first, pg_dsn) as s:
        await s.drain(timeout=30)
    from outbox.maintenance import event_record, import_records

    async with OutboxReader(first) as reader:
        lines = [json.dumps(event_record(e)) async for chunk in reader.iter_events() for e in chunk]

    async def numbered() -> Any:
        for n, line in enumerate(lines, 1):
            yield n, line

    new = await append_many(second, 5, topic="other")
    async with OutboxReader(second) as reader:
        await import_records(reader, numbered())
    async with Shipper(second, pg_dsn) as s:
        await s.drain(timeout=30)
    stored = await ids_in(pg_dsn)
    assert sorted(stored) == sorted(ids + new)


async def test_poison_rows_become_dead_letters_and_the_rest_ship(outbox_path: Path, pg_dsn: str) -> None:
    await migrate(pg_dsn)
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute("ALTER TABLE outbox_events ADD CONSTRAINT no_poison CHECK (NOT payload ? 'poison')")
    async with Outbox(outbox_path) as ob:
        good = [await ob.append("t", {"i": i}) for i in range(100)]
        bad = [await ob.append("t", {"poison": i}) for i in range(3)]
        good += [await ob.append("t", {"i": i}) for i in range(100, 150)]
        bad_command = await ob.append("command_calls", {"command": "queue"})  # no discord_uid
    try:
        async with Shipper(outbox_path, pg_dsn, batch_size=64) as s:
            await s.drain(timeout=30)
            assert s.stats.dead == 4
        assert sorted(await ids_in(pg_dsn)) == sorted(good)
        async with OutboxReader(outbox_path) as reader:
            dead = await reader.dead_letters()
            assert sorted(d.id for d in dead) == sorted(bad + [bad_command])
            errors = {d.id: d.error for d in dead}
            assert all("no_poison" in errors[i] and "23514" in errors[i] for i in bad)
            assert "discord_uid" in errors[bad_command] and "23502" in errors[bad_command]  # Postgres says why
            status = await reader.status()
            assert (status.pending, status.shipped, status.dead) == (0, 150, 4)
            # the cause is fixed; an operator asks for another attempt
            await conn.execute("ALTER TABLE outbox_events DROP CONSTRAINT no_poison")
            assert await reader.retry_dead(topic="t") == 3
        async with Shipper(outbox_path, pg_dsn) as s:
            for _ in range(100):
                if len(await ids_in(pg_dsn)) == 153:
                    break
                await asyncio.sleep(0.1)
        assert sorted(await ids_in(pg_dsn)) == sorted(good + bad)
        async with OutboxReader(outbox_path) as reader:
            assert [d.id for d in await reader.dead_letters()] == [bad_command]
    finally:
        await conn.close()


async def test_outage_mid_stream_then_everything_arrives_once(
    outbox_path: Path, pg_dsn: str, pg_server: PgServer
) -> None:
    proxy = PgProxy(pg_dsn)
    await proxy.start()
    expected: list[str] = []
    async with Outbox(outbox_path) as ob:
        async with Shipper(outbox_path, proxy.dsn, outbox=ob, batch_size=50, backoff_cap=0.5) as s:
            for round_ in range(3):
                expected += [await ob.append("t", {"round": round_, "i": i}) for i in range(200)]
                await proxy.cut()  # the server goes away mid-stream
                expected += [await ob.append("t", {"round": round_, "down": i}) for i in range(200)]
                await asyncio.sleep(0.5)
                await proxy.start()
            await s.drain(timeout=60)
            assert s.stats.retries >= 1
    await proxy.cut()
    stored = await ids_in(pg_dsn)
    assert len(stored) == len(expected) == len(set(stored))
    assert set(stored) == set(expected)


async def test_server_restart_is_survived(outbox_path: Path, pg_server: PgServer, pg_dsn: str) -> None:
    """Stop the real server (the embedded one) mid-stream and start it again."""
    proxy = None
    if not pg_server.controllable:  # OUTBOX_TEST_DSN: the proxy test above covers the outage
        proxy = PgProxy(pg_dsn)
        await proxy.start()
        stop, start, dsn = proxy.cut, proxy.start, proxy.dsn
    else:
        stop, start, dsn = _async(pg_server.stop), _async(pg_server.start), pg_dsn
    expected: list[str] = []
    try:
        async with Outbox(outbox_path) as ob:
            async with Shipper(outbox_path, dsn, outbox=ob, batch_size=100, backoff_cap=0.5) as s:
                expected += [await ob.append("t", {"i": i}) for i in range(300)]
                await stop()
                expected += [await ob.append("t", {"during": i}) for i in range(300)]
                await asyncio.sleep(1.0)
                await start()
                await s.drain(timeout=60)
    finally:
        if proxy is not None:
            await proxy.cut()  # its pipes must not outlive the test (a ResourceWarning in the next one)
    assert sorted(await ids_in(pg_dsn)) == sorted(expected)


def _async(fn: Any) -> Any:
    async def call() -> None:
        await asyncio.to_thread(fn)

    return call


async def test_no_hot_loop_while_postgres_is_down(outbox_path: Path) -> None:
    await append_many(outbox_path, 5)
    shipper = Shipper(outbox_path, "postgresql://u:pw@127.0.0.1:1/db", backoff_base=0.05, backoff_cap=0.4, stop_timeout=1)
    async with shipper:
        await asyncio.sleep(2.0)
        retries = shipper.stats.retries
    # full jitter from 0.05 s doubling to a 0.4 s cap: ~8-20 tries in 2 s; a hot loop makes thousands
    assert 2 <= retries <= 40, retries
    assert "cannot reach Postgres" in (shipper.stats.last_error or "")
    async with OutboxReader(outbox_path) as reader:
        status = await reader.status()
        assert status.pending == 5 and "127.0.0.1:1" in (status.last_error or "")
        assert "pw" not in (status.last_error or "")


async def test_a_dropped_table_waits_for_migrate_then_resumes(
    outbox_path: Path, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="shipper.loop")
    first = await append_many(outbox_path, 10)
    async with Outbox(outbox_path) as ob:
        async with Shipper(outbox_path, pg_dsn, outbox=ob, backoff_cap=0.3) as s:
            await s.drain(timeout=30)
            conn = await asyncpg.connect(pg_dsn)
            await conn.execute("DROP TABLE outbox_events")
            later = [await ob.append("t", {"late": i}) for i in range(10)]
            for _ in range(100):
                if s.stats.retries:
                    break
                await asyncio.sleep(0.05)
            assert any("shipper migrate" in r.getMessage() for r in caplog.records)
            await migrate(pg_dsn)
            await s.drain(timeout=30)
            await conn.close()
    assert sorted(await ids_in(pg_dsn)) == sorted(later)  # the dropped table took the first 10 with it
    assert len(first) == 10


async def test_two_shippers_on_one_outbox_one_stands_by(
    outbox_path: Path, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shipper.loop")
    ids = await append_many(outbox_path, 500)
    a = Shipper(outbox_path, pg_dsn, batch_size=50)
    b = Shipper(outbox_path, pg_dsn, batch_size=50)
    async with a, b:
        await asyncio.gather(a.drain(timeout=30), b.drain(timeout=30))
        more = await append_many(outbox_path, 100)
        await a.stop()  # the leader goes away; the other takes over
        await b.drain(timeout=30)
    assert sorted(await ids_in(pg_dsn)) == sorted(ids + more)
    assert any("standing by" in r.getMessage() for r in caplog.records)
    assert a.stats.shipped + b.stats.shipped == 600


async def test_in_process_shipper_is_woken_by_appends(outbox_path: Path, pg_dsn: str) -> None:
    """With a 60 s poll interval, only the append's wake-up can ship the event in time."""
    await migrate(pg_dsn)
    async with Outbox(outbox_path) as ob:
        async with Shipper(outbox_path, pg_dsn, outbox=ob, flush_interval=60) as s:
            await s.drain(timeout=30)  # connected and idle
            event_id = await ob.append("t", {"now": True})
            for _ in range(100):
                if event_id in await ids_in(pg_dsn):
                    break
                await asyncio.sleep(0.05)
            else:
                pytest.fail("the append did not wake the shipper")


async def test_retention_prunes_shipped_events(outbox_path: Path, pg_dsn: str) -> None:
    await append_many(outbox_path, 100)
    async with Shipper(outbox_path, pg_dsn, retention_s=0, housekeeping_interval=0.01) as s:
        await s.drain(timeout=30)
        await asyncio.sleep(0.3)
    async with OutboxReader(outbox_path) as reader:
        status = await reader.status()
        assert status.shipped <= 1 and status.pending == 0  # the newest row always stays
    assert len(await ids_in(pg_dsn)) == 100


async def test_metrics_are_served(outbox_path: Path, pg_dsn: str) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    await append_many(outbox_path, 10)
    async with Shipper(outbox_path, pg_dsn, metrics_port=port) as s:
        await s.drain(timeout=30)
        body = await asyncio.to_thread(lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
    assert "outbox_shipped_total 10.0" in body
    for name in ("outbox_pending", "outbox_dead_total", "outbox_retries_total", "outbox_batch_duration_seconds", "outbox_lag_seconds"):
        assert name in body


def test_errors_are_classified() -> None:
    assert classify(asyncpg.UniqueViolationError("dup")) == "conflict"
    assert classify(asyncpg.CheckViolationError("bad")) == "row"
    assert classify(asyncpg.InvalidTextRepresentationError("bad")) == "row"
    assert classify(asyncpg.UndefinedTableError("gone")) == "schema"
    assert classify(asyncpg.TooManyConnectionsError("full")) == "transient"
    assert classify(asyncpg.AdminShutdownError("bye")) == "transient"
    assert classify(asyncpg.QueryCanceledError("slow")) == "transient"
    assert classify(ConnectionResetError()) == "transient"


class SinkContract:
    """What every sink must do; run against each implementation (huey's StorageTests pattern)."""

    async def make(self, dsn: str) -> Sink:
        raise NotImplementedError

    async def test_contract(self, tmp_path: Path, pg_dsn: str) -> None:
        path = tmp_path / "e.db"
        await append_many(path, 6)
        async with Outbox(path) as ob:
            await ob.append("command_calls", COMMAND)
            await ob.append("command_calls", {"command": "x"})  # refused: no discord_uid
        sink = await self.make(pg_dsn)
        await sink.open()
        set_aside: list[Any] = []

        async def keep(failures: list[Any]) -> None:
            set_aside.extend(failures)

        try:
            async with OutboxReader(path) as reader:
                events = await reader.read_pending(100)
                oid = reader.outbox_id
            assert await sink.try_lease(oid, "a", 30.0)
            assert not await sink.try_lease(oid, "b", 30.0)  # held: the second shipper stands by
            assert not await sink.try_lease(oid, "b", 30.0, renew=True)  # renewing is for the holder only
            assert await sink.try_lease(oid, "a", 30.0, renew=True)
            assert await sink.position(oid) == 0
            with pytest.raises(LeaseLost):  # fenced: refused whole, the ledger row included
                await sink.send(Batch(oid, 0, events[3].seq, events[:4], lease="b"), keep)
            assert await sink.position(oid) == 0
            first = Batch(oid, 0, events[3].seq, events[:4], lease="a")
            result = await sink.send(first, keep)
            assert (result.shipped, result.rejected, result.already_shipped_to) == (4, [], None)
            again = await sink.send(Batch(oid, 0, events[2].seq, events[:3]), keep)
            assert again.already_shipped_to == events[3].seq and again.shipped == 0
            assert await sink.position(oid) == events[3].seq
            rest = await sink.send(Batch(oid, events[3].seq, events[-1].seq, events[4:]), keep)
            assert rest.shipped == 3 and [e.id for e, _ in rest.rejected] == [events[-1].id]
            assert [e.id for e, _ in set_aside] == [events[-1].id]
            redo = await sink.upsert(events[:7])
            assert redo.shipped == 7 and not redo.rejected
            assert [e.id for e in await sink.missing(events)] == [events[-1].id]
            await sink.release_lease(oid, "b")  # not the holder: nothing happens
            assert not await sink.try_lease(oid, "b", 30.0)
            await sink.release_lease(oid, "a")  # a clean stop: free at once
            assert await sink.try_lease(oid, "b", 30.0)
            with pytest.raises(LeaseLost):
                await sink.send(Batch(oid, events[-1].seq, events[-1].seq + 1, events[-1:], lease="a"), keep)
        finally:
            await sink.close()


class TestPostgresSink(SinkContract):
    async def make(self, dsn: str) -> Sink:
        return PostgresSink(dsn)


class TestPostgresSinkStatementByStatement(SinkContract):
    """The same sink where asyncpg lacks what the one-query fast path uses (shipper.pgcopy)."""

    @pytest.fixture(autouse=True)
    def _no_one_trip(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr("shipper.pgcopy.supports_one_trip", lambda conn: False)

    async def make(self, dsn: str) -> Sink:
        return PostgresSink(dsn)


class TestPostgresSinkThroughPgBouncer(SinkContract):
    """The same sink through a real PgBouncer in transaction mode, pool of two."""

    @pytest.fixture(autouse=True)
    def _bouncer(self, pgbouncer: PgBouncer) -> None:
        self.bouncer = pgbouncer

    async def make(self, dsn: str) -> Sink:
        return PostgresSink(self.bouncer.dsn(dsn))


class TestInMemorySink(SinkContract):
    async def make(self, dsn: str) -> Sink:
        return InMemorySink()


async def test_replay_counts_new_rows_and_leaves_dead_letters_out(outbox_path: Path, pg_dsn: str) -> None:
    from shipper import replay

    ids = await append_many(outbox_path, 30)
    async with Outbox(outbox_path) as ob:
        poison = await ob.append("command_calls", {"command": "queue"})  # no discord_uid: a dead letter
    async with Shipper(outbox_path, pg_dsn) as s:
        await s.drain(timeout=30)
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute("DELETE FROM outbox_events WHERE id = ANY($1::uuid[])", ids[:7])  # a restore lost them
    await conn.close()
    async with OutboxReader(outbox_path) as reader:
        dry = await replay(reader, pg_dsn, dry_run=True)
        assert (dry.selected, dry.inserted) == (30, 0)
        done = await replay(reader, pg_dsn)
        assert (done.selected, done.inserted, done.rejected) == (30, 7, 0)
        again = await replay(reader, pg_dsn)
        assert (again.selected, again.inserted) == (30, 0)
        assert [d.id for d in await reader.dead_letters()] == [poison]
    assert sorted(await ids_in(pg_dsn)) == sorted(ids)


async def test_verify_on_a_database_without_tables_says_migrate(outbox_path: Path, pg_dsn: str) -> None:
    from shipper import verify

    await append_many(outbox_path, 3)
    async with OutboxReader(outbox_path) as reader:
        await reader.advance(3)
        with pytest.raises(SchemaError, match="shipper migrate"):
            await verify(reader, pg_dsn)
