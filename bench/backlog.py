"""Backlogs for the shipping benchmarks: outboxes full of pending events, and a clean Postgres.

Filling an outbox goes through ``Outbox.append`` (the real ids, timestamps and rows), once per
benchmark; between trials the same file is reused by moving its cursor back, and the Postgres
tables are emptied and a ``CHECKPOINT`` taken, so every trial -- ours or a baseline -- starts
from the same state.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

import asyncio
import time

from outbox import Event, Outbox, OutboxReader
from shipper.migrate import migrate

from .workload import command_events

__all__ = [
    "PLAIN_TOPIC",
    "ROUTE_TOPIC",
    "BENCH_ROUTES",
    "RAW_TABLES",
    "LEDGER_CHANNEL",
    "fill",
    "rewind",
    "read_topic",
    "outbox_id",
    "wait_shipped",
    "prepare_database",
    "reset_database",
]

PLAIN_TOPIC = "bot_events"  # any topic but command_calls: rows land in outbox_events
ROUTE_TOPIC = "bench_matches"  # a user route: the same command-like events into a table of the user's
BENCH_ROUTES = {ROUTE_TOPIC: ROUTE_TOPIC}
RAW_TABLES = {"outbox_events": "raw_copy_events", "command_calls": "raw_copy_commands", ROUTE_TOPIC: "raw_copy_matches"}
LEDGER_CHANNEL = "bench_ledger"

# A NOTIFY per committed ledger row: Postgres delivers it when the batch's transaction commits,
# i.e. when its rows become visible, so a listener learns the moment without polling.
_NOTIFY = f"""
CREATE OR REPLACE FUNCTION bench_notify_ledger() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{LEDGER_CHANNEL}', NEW.outbox_id::text || ' ' || NEW.last_seq::text);
    RETURN NULL;
END $$;
DROP TRIGGER IF EXISTS bench_notify ON outbox_ledger;
CREATE TRIGGER bench_notify AFTER INSERT ON outbox_ledger FOR EACH ROW EXECUTE FUNCTION bench_notify_ledger();
"""


async def fill(path: Path, n: int, topic: str = PLAIN_TOPIC, *, seed: int = 7) -> None:
    """Append ``n`` command-like events (~200 bytes of JSON each) to the outbox at ``path``."""
    events = command_events(2000, seed=seed)
    async with Outbox(path) as ob:
        for i in range(n):
            await ob.append(topic, events[i % 2000])


async def rewind(path: Path, pending: int | None = None) -> int:
    """Make the last ``pending`` events (default: all) pending again; return the outbox's last seq."""
    async with OutboxReader(path) as reader:
        last = await reader.last_seq()
        await reader.set_cursor(0 if pending is None else max(0, last - pending))
        return last


async def read_topic(path: Path, topic: str = PLAIN_TOPIC) -> list[Event]:
    """Every event of ``topic`` in the outbox, in seq order."""
    out: list[Event] = []
    async with OutboxReader(path) as reader:
        async for chunk in reader.iter_events(topic=topic, chunk=5000):
            out.extend(chunk)
    return out


async def outbox_id(path: Path) -> str:
    """The outbox's id (the ledger's key for it)."""
    async with OutboxReader(path) as reader:
        return reader.outbox_id


async def wait_shipped(path: Path, timeout: float) -> None:
    """Wait until everything in the outbox has been shipped (by whoever ships it)."""
    deadline = time.monotonic() + timeout
    async with OutboxReader(path) as reader:
        target = await reader.last_seq()
        while await reader.cursor() < target:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{path.name}: events still pending after {timeout:g} s")
            await asyncio.sleep(0.02)


async def prepare_database(dsn: str, *, notify: bool = False) -> None:
    """Migrate, create the raw-COPY tables (same shape as the shipper's), optionally the NOTIFY."""
    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        # the user's own table, made by hand as a user would: command_calls' columns and key
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {ROUTE_TOPIC} (LIKE command_calls INCLUDING ALL)")
        for source, raw in RAW_TABLES.items():
            await conn.execute(f"CREATE TABLE IF NOT EXISTS {raw} (LIKE {source} INCLUDING ALL)")
        if notify:
            await conn.execute(_NOTIFY)
    finally:
        await conn.close()


async def reset_database(dsn: str) -> None:
    """Empty every table the benchmarks write and checkpoint, so no trial inherits dirty pages."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            f"TRUNCATE outbox_events, command_calls, {ROUTE_TOPIC}, outbox_ledger, " + ", ".join(RAW_TABLES.values())
        )
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
