"""Stopping a shipper stops it: also when the caller gives up on ``stop()`` (a cancelled await).

``wait_for(stop(), 0.05)`` used to leave the loop running for ever with its reader closed.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from outbox import Outbox, OutboxReader
from shipper import Shipper


async def count_ids(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r[0] for r in await conn.fetch("SELECT id::text FROM outbox_events")]
    finally:
        await conn.close()


async def test_a_cancelled_stop_still_stops_the_loop(outbox_path: Path, pg_dsn: str) -> None:
    async with Outbox(outbox_path) as ob:
        acked = [await ob.append("t", {"i": i, "pad": "x" * 200}) for i in range(30_000)]
    s = Shipper(outbox_path, pg_dsn, batch_size=200)
    await s.start()
    task = s._task
    assert task is not None
    await asyncio.sleep(0.05)  # mid-stream
    try:
        await asyncio.wait_for(s.stop(), 0.05)
    except asyncio.TimeoutError:
        pass
    for _ in range(100):
        if task.done():
            break
        await asyncio.sleep(0.02)
    assert task.done(), "the loop is still running after stop() was cancelled"
    async with Shipper(outbox_path, pg_dsn) as again:  # nothing lost: the rest ships
        await again.drain(timeout=60)
    async with OutboxReader(outbox_path) as reader:
        assert (await reader.status()).pending == 0
    ids = await count_ids(pg_dsn)
    assert len(ids) == len(set(ids)) and set(ids) == set(acked), "every event once"
