"""The ways of recording one command event that the append benchmark times, side by side.

Each factory opens its store (registering the cleanup on ``stack``) and returns a
:class:`~bench.timing.LatencyMethod` whose ``call(i)`` records event ``i``. Inputs that are not
part of a method's job are prepared beforehand (:class:`Events`): the floor gets its row already
serialised and its id already made, exactly as the issue defines it.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from outbox import Outbox
from outbox.ids import uuid7

from .timing import LatencyMethod
from .workload import TOPIC, command_events, serialise

__all__ = ["Events", "FACTORIES", "Factory", "sqlite_synchronous"]

# The outbox's own table, so the floor writes rows of the same shape into a table of the same shape.
SQLITE_TABLE = """CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, topic TEXT NOT NULL,
    payload TEXT NOT NULL, created_at INTEGER NOT NULL)"""
SQLITE_INSERT = "INSERT INTO events(id, topic, payload, created_at) VALUES (?, ?, ?, ?)"
PG_TABLE = """CREATE TABLE {name} (
    id uuid PRIMARY KEY, topic text NOT NULL, payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now())"""
PG_INSERT = "INSERT INTO {name}(id, topic, payload) VALUES ($1, $2, $3)"


@dataclass(frozen=True)
class Events:
    """``n`` command events: as dicts (for the outbox), and as ready rows (for the floors)."""

    payloads: list[dict[str, Any]]
    texts: list[str]
    rows: list[tuple[str, str, str, int]]

    @classmethod
    def make(cls, n: int) -> Events:
        payloads = command_events(n)
        texts = [serialise(p) for p in payloads]
        now = time.time_ns() // 1000
        rows = [(uuid7(), TOPIC, text, now + i) for i, text in enumerate(texts)]
        return cls(payloads, texts, rows)


@dataclass(frozen=True, kw_only=True)
class Target:
    """Where a method writes: a scratch directory for files, a Postgres DSN for the Postgres ones."""

    workdir: Path
    pg_dsn: str | None = None
    pg_tcp_dsn: str | None = None


Factory = Callable[[AsyncExitStack, Target, Events], Any]


def sqlite_synchronous(conn: sqlite3.Connection) -> str:
    """Return the connection's ``synchronous`` setting by name."""
    level = conn.execute("PRAGMA synchronous").fetchone()[0]
    return {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}.get(level, str(level))


async def outbox(stack: AsyncExitStack, target: Target, ev: Events) -> LatencyMethod:
    ob = await Outbox(target.workdir / "outbox.db").open()
    stack.push_async_callback(ob.close)
    append, payloads = ob.append, ev.payloads
    return LatencyMethod(
        key="outbox", label="Outbox.append (ours)", is_async=True, call=lambda i: append(TOPIC, payloads[i])
    )


def _floor_conn(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute(SQLITE_TABLE)
    return conn


async def floor(stack: AsyncExitStack, target: Target, ev: Events) -> LatencyMethod:
    conn = _floor_conn(target.workdir / "floor.db", "NORMAL")
    stack.callback(conn.close)
    execute, rows = conn.execute, ev.rows
    return LatencyMethod(
        key="floor", label="sqlite3 INSERT (the floor)", is_async=False, call=lambda i: execute(SQLITE_INSERT, rows[i])
    )


async def aiosqlite_insert(stack: AsyncExitStack, target: Target, ev: Events) -> LatencyMethod:
    import aiosqlite

    db = await aiosqlite.connect(target.workdir / "aiosqlite.db", isolation_level=None)
    stack.push_async_callback(db.close)
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = NORMAL")
    await db.execute(SQLITE_TABLE)
    execute, rows = db.execute, ev.rows
    return LatencyMethod(
        key="aiosqlite", label="aiosqlite INSERT, awaited", is_async=True, call=lambda i: execute(SQLITE_INSERT, rows[i])
    )


async def _pool(stack: AsyncExitStack, dsn: str, table: str) -> Any:
    import asyncpg

    pool = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    stack.push_async_callback(pool.close)
    await pool.execute(PG_TABLE.format(name=table))
    return pool


async def _asyncpg_awaited(stack: AsyncExitStack, dsn: str, key: str, label: str, ev: Events) -> LatencyMethod:
    pool = await _pool(stack, dsn, key)
    execute, rows, sql = pool.execute, ev.rows, PG_INSERT.format(name=key)
    return LatencyMethod(
        key=key, label=label, is_async=True, call=lambda i: execute(sql, rows[i][0], TOPIC, rows[i][2])
    )


async def asyncpg_socket(stack: AsyncExitStack, target: Target, ev: Events) -> LatencyMethod:
    assert target.pg_dsn is not None
    return await _asyncpg_awaited(stack, target.pg_dsn, "asyncpg", "asyncpg INSERT, awaited", ev)


async def asyncpg_tcp(stack: AsyncExitStack, target: Target, ev: Events) -> LatencyMethod | None:
    if target.pg_tcp_dsn is None:
        return None
    return await _asyncpg_awaited(
        stack, target.pg_tcp_dsn, "asyncpg_tcp", "asyncpg INSERT, awaited (TCP loopback)", ev
    )


async def create_task(stack: AsyncExitStack, target: Target, ev: Events) -> LatencyMethod:
    assert target.pg_dsn is not None
    pool = await _pool(stack, target.pg_dsn, "fire_and_forget")
    execute, rows, sql = pool.execute, ev.rows, PG_INSERT.format(name="fire_and_forget")
    pending: set[asyncio.Task[Any]] = set()

    def call(i: int) -> None:
        task = asyncio.create_task(execute(sql, rows[i][0], TOPIC, rows[i][2]))
        pending.add(task)
        task.add_done_callback(pending.discard)

    async def drain() -> None:
        while pending:
            await asyncio.gather(*list(pending))

    stack.push_async_callback(drain)
    return LatencyMethod(
        key="create_task", label="create_task(asyncpg INSERT), caller's cost", is_async=False, call=call, after_block=drain
    )


async def persist_queue(stack: AsyncExitStack, target: Target, ev: Events) -> LatencyMethod:
    import persistqueue

    q = persistqueue.SQLiteAckQueue(str(target.workdir / "persist-queue"), auto_commit=True)
    stack.callback(q.close)
    put, texts = q.put, ev.texts
    return LatencyMethod(key="persist_queue", label="persist-queue SQLiteAckQueue.put", is_async=False, call=lambda i: put(texts[i]))


async def litequeue(stack: AsyncExitStack, target: Target, ev: Events) -> LatencyMethod:
    from litequeue import LiteQueue  # type: ignore[import-untyped]

    q = LiteQueue(str(target.workdir / "litequeue.db"))
    stack.callback(q.close)
    put, texts = q.put, ev.texts
    return LatencyMethod(key="litequeue", label="litequeue put", is_async=False, call=lambda i: put(texts[i]))


FACTORIES: dict[str, Factory] = {
    "outbox": outbox,
    "floor": floor,
    "aiosqlite": aiosqlite_insert,
    "asyncpg": asyncpg_socket,
    "asyncpg_tcp": asyncpg_tcp,
    "create_task": create_task,
    "persist_queue": persist_queue,
    "litequeue": litequeue,
}
