"""Postgres going away, or refusing, while events keep coming: restarts, cut connections,
statement timeouts, no connection slots left.

A bot-like feed appends all along; the in-process shipper must keep every event through each
fault and ship it once the server is usable again.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest

from outbox import Outbox, OutboxReader
from pgproxy import PgProxy
from pgserver import PgServer
from shipper import Shipper, migrate
from torture_kit import SIZES, Feed, Tally, execute, pick


@pytest.mark.parametrize("size", SIZES)
async def test_postgres_restarted_mid_stream(
    size: str, tmp_path: Path, pg_server: PgServer, pg_dsn: str, tally: Tally
) -> None:
    """The embedded server is stopped hard (``-m immediate``) and started again; with
    ``OUTBOX_TEST_DSN`` a proxy in front of it is cut and restored instead."""
    cycles = pick(size, 2, 12)
    rng = random.Random(7201)
    proxy: PgProxy | None = None
    down: Callable[[], Awaitable[None]]
    up: Callable[[], Awaitable[None]]
    dsn = pg_dsn
    if pg_server.controllable:
        async def down() -> None:
            await asyncio.to_thread(pg_server.stop)

        async def up() -> None:
            await asyncio.to_thread(pg_server.start)
    else:
        proxy = PgProxy(pg_dsn)
        await proxy.start()
        down, up, dsn = proxy.cut, proxy.start, proxy.dsn
    path = tmp_path / "events.db"
    try:
        async with Outbox(path) as ob, Shipper(path, dsn, outbox=ob, batch_size=200, backoff_cap=0.3) as s:
            async with Feed(ob, "restart") as feed:
                for _ in range(cycles):
                    await asyncio.sleep(rng.uniform(0.2, 0.6))
                    await down()
                    tally.faults += 1
                    await asyncio.sleep(rng.uniform(0.1, 0.5))
                    await up()
            await s.drain(timeout=120)
            assert s.stats.retries >= cycles, s.stats
    finally:
        if proxy is not None:
            await proxy.cut()
        elif pg_server.controllable:
            await asyncio.to_thread(pg_server.start)  # whatever happened, leave it running
    tally.fault = "server stops (immediate) and restarts" if pg_server.controllable else "proxy cuts"
    tally.notes["retries"] = s.stats.retries
    await tally.settle(pg_dsn, feed.acked)


@pytest.mark.parametrize("size", SIZES)
async def test_backends_terminated_mid_stream(size: str, tmp_path: Path, pg_dsn: str, tally: Tally) -> None:
    rounds = pick(size, 15, 120)
    rng = random.Random(7202)
    path = tmp_path / "events.db"
    admin = await asyncpg.connect(pg_dsn)
    try:
        async with Outbox(path) as ob, Shipper(path, pg_dsn, outbox=ob, batch_size=100, backoff_cap=0.2) as s:
            async with Feed(ob, "cut", burst=50) as feed:
                for _ in range(rounds):
                    await asyncio.sleep(rng.uniform(0.02, 0.25))
                    cut = await admin.fetchval(
                        "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
                    tally.faults += int(cut)
            await s.drain(timeout=120)
    finally:
        await admin.close()
    assert tally.faults >= rounds // 2, "most rounds should find the shipper's connection to cut"
    tally.fault = "backends terminated (pg_terminate_backend)"
    tally.notes["retries"] = s.stats.retries
    await tally.settle(pg_dsn, feed.acked)


@pytest.mark.parametrize("size", SIZES)
async def test_statement_timeout_while_the_table_is_locked(size: str, tmp_path: Path, pg_dsn: str, tally: Tally) -> None:
    """``statement_timeout`` on the database, and the target table locked for longer than that:
    every COPY is cancelled (SQLSTATE 57014) until the lock goes, then everything ships."""
    cycles = pick(size, 2, 10)
    rng = random.Random(7203)
    database = urlsplit(pg_dsn).path.lstrip("/")
    path = tmp_path / "events.db"
    await migrate(pg_dsn)
    await execute(pg_dsn, f'ALTER DATABASE "{database}" SET statement_timeout = \'250ms\'')
    holder = await asyncpg.connect(pg_dsn)
    try:
        async with Outbox(path) as ob, Shipper(path, pg_dsn, outbox=ob, batch_size=500, backoff_cap=0.2) as s:
            async with Feed(ob, "timeout") as feed:
                for _ in range(cycles):
                    before = s.stats.retries
                    async with holder.transaction():
                        await holder.execute("LOCK TABLE outbox_events IN ACCESS EXCLUSIVE MODE")
                        await asyncio.sleep(rng.uniform(0.8, 1.5))
                    assert s.stats.retries > before, "the shipper's statements should have timed out"
                    tally.faults += s.stats.retries - before
                    await asyncio.sleep(0.3)
            await s.drain(timeout=120)
            assert s.stats.last_error is not None and "statement timeout" in s.stats.last_error, s.stats
        async with OutboxReader(path) as reader:
            assert (await reader.status()).last_error is None, "the error should clear once shipping resumed"
    finally:
        await holder.close()
    tally.fault = "statements cancelled by statement_timeout"
    await tally.settle(pg_dsn, feed.acked)


def as_role(dsn: str, user: str, password: str) -> str:
    """Return ``dsn`` logging in as ``user`` with ``password``."""
    parts = urlsplit(dsn)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{quote(user)}:{quote(password, safe='')}@{host}"))


async def hold_every_slot(dsn: str, limit: int, held: list[asyncpg.Connection]) -> None:
    """Take the role's remaining connection slots, cutting the shipper's if it holds one."""
    for _ in range(200):
        while len(held) < limit:
            try:
                held.append(await asyncpg.connect(dsn))
            except asyncpg.TooManyConnectionsError:
                break
        if len(held) == limit:
            return
        await held[0].execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE usename = current_user AND pid <> pg_backend_pid() AND datname = current_database()"
            " AND pid NOT IN (SELECT unnest($1::int[]))",
            [c.get_server_pid() for c in held],
        )
        await asyncio.sleep(0.01)
    raise AssertionError("could not take the role's connection slots")


@pytest.mark.parametrize("size", SIZES)
async def test_no_connection_slots_left(size: str, tmp_path: Path, pg_server: PgServer, tally: Tally) -> None:
    """A role with ``CONNECTION LIMIT 2`` (superusers are not limited) whose slots are all taken."""
    cycles = pick(size, 2, 10)
    rng = random.Random(7204)
    role, password = f"torture_{uuid.uuid4().hex[:10]}", "pw-" + uuid.uuid4().hex[:8]
    admin_dsn = await pg_server.create_database()
    database = urlsplit(admin_dsn).path.lstrip("/")
    await execute(
        admin_dsn,
        f"CREATE ROLE {role} LOGIN PASSWORD '{password}' CONNECTION LIMIT 2",
        f'ALTER DATABASE "{database}" OWNER TO {role}',
    )
    dsn = as_role(admin_dsn, role, password)
    path = tmp_path / "events.db"
    held: list[asyncpg.Connection] = []
    errors: set[str] = set()
    try:
        await hold_every_slot(dsn, 2, held)
        async with Outbox(path) as ob, Shipper(path, dsn, outbox=ob, backoff_cap=0.2) as s:
            async with Feed(ob, "slots") as feed:
                for cycle in range(cycles):
                    if cycle:
                        await hold_every_slot(dsn, 2, held)
                    tally.faults += 1
                    shipped = s.stats.shipped
                    await asyncio.sleep(rng.uniform(0.5, 1.0))
                    assert s.stats.shipped == shipped, "nothing can ship without a connection"
                    errors.add(str(s.stats.last_error))
                    await held.pop().close()  # one slot free again: shipping resumes
                    await asyncio.sleep(0.5)
                    assert s.stats.shipped > shipped
            await s.drain(timeout=120)
        assert any("too many connections" in e for e in errors), errors
        assert not any(password in e for e in errors), "a password leaked into an error"
        tally.fault = "spells with every connection slot of the role taken"
        tally.notes["retries"] = s.stats.retries
        await tally.settle(admin_dsn, feed.acked)
    finally:
        for conn in held:
            await conn.close()
        await pg_server.drop_database(admin_dsn)
        await execute(pg_server.dsn, f"DROP ROLE IF EXISTS {role}")
