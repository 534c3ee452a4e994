"""Kill -9 a real sidecar mid-shipping, many times: the rows in Postgres equal the appended ids."""

from __future__ import annotations

import asyncio
import os
import random
import signal
from pathlib import Path

import asyncpg

from child_procs import start_sidecar
from outbox import Outbox, OutboxReader
from shipper import Shipper

async def count_rows(dsn: str) -> tuple[int, set[str]]:
    conn = await asyncpg.connect(dsn)
    try:
        ids = {r[0] for r in await conn.fetch("SELECT id::text FROM outbox_events")}
        total = await conn.fetchval("SELECT count(*) FROM outbox_events")
        return int(total), ids
    except asyncpg.UndefinedTableError:
        return 0, set()
    finally:
        await conn.close()


async def test_sigkill_of_the_sidecar_mid_batch_loses_and_doubles_nothing(
    outbox_path: Path, pg_dsn: str, subprocess_env: dict[str, str]
) -> None:
    rounds = int(os.environ.get("OUTBOX_CRASH_ROUNDS", "8"))
    rng = random.Random(11)
    appended: list[str] = []
    mid_stream = 0
    async with Outbox(outbox_path) as ob:
        appended += [await ob.append("t", {"i": i, "pad": "p" * 100}) for i in range(20_000)]
        for round_ in range(rounds):
            appended += [await ob.append("t", {"round": round_, "i": i}) for i in range(3000)]
            proc = start_sidecar(outbox_path, pg_dsn, subprocess_env, batch_size=rng.choice([50, 100, 200]))
            await asyncio.sleep(rng.uniform(0.0, 0.1))
            os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)
            shipped, _ = await count_rows(pg_dsn)
            mid_stream += shipped < len(appended)
    shipped_before_final, _ = await count_rows(pg_dsn)
    async with Shipper(outbox_path, pg_dsn) as s:
        await s.drain(timeout=120)
    total, ids = await count_rows(pg_dsn)
    lost = len(set(appended) - ids)
    print(f"\n{rounds} kills ({mid_stream} mid-stream); {len(appended)} appended, {shipped_before_final} shipped"
          f" before the last drain, {total} rows in Postgres, {lost} lost, {total - len(ids)} duplicated")
    assert mid_stream >= min(3, rounds), "several kills should land with events still unshipped"
    assert lost == 0 and total == len(appended) and ids == set(appended)
    async with OutboxReader(outbox_path) as reader:
        status = await reader.status()
        assert (status.pending, status.shipped, status.dead) == (0, len(appended), 0)


async def test_sigterm_drains_and_exits_zero(outbox_path: Path, pg_dsn: str, subprocess_env: dict[str, str]) -> None:
    proc = start_sidecar(outbox_path, pg_dsn, subprocess_env, batch_size=100)
    async with Outbox(outbox_path) as ob:
        appended = [await ob.append("t", {"i": i}) for i in range(5000)]
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err[-2000:]
    total, ids = await count_rows(pg_dsn)
    assert ids == set(appended) and total == 5000
    assert "shipped" in out
