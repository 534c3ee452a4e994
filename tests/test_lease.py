"""The lease: one shipper ships, a clean stop hands over at once, a frozen leader is replaced.

Run directly and through a real PgBouncer in transaction mode (where a session advisory lock
would be shared by every client of a pooled server connection, and outlive them).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import signal
import subprocess
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from child_procs import start_sidecar
from outbox import Outbox
from shipper import Shipper, migrate



async def append(path: Path, n: int, tag: str) -> list[str]:
    async with Outbox(path) as ob:
        return [await ob.append("clicks", {"tag": tag, "i": i}) for i in range(n)]


async def shipped(dsn: str) -> tuple[list[str], int]:
    """Ids in outbox_events, and the rows the ledger says its batches carried."""
    conn = await asyncpg.connect(dsn)
    try:
        ids = [r[0] for r in await conn.fetch("SELECT id::text FROM outbox_events")]
        return ids, int(await conn.fetchval("SELECT coalesce(sum(rows), 0) FROM outbox_ledger"))
    finally:
        await conn.close()


async def wait_for(check: Callable[[], object], what: str, seconds: float = 60.0) -> None:
    for _ in range(int(seconds / 0.05)):
        result = check()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def test_one_of_two_shippers_ships_and_a_clean_stop_hands_over_at_once(
    outbox_path: Path, pg_dsn: str, route_dsn: Callable[[str], str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="shipper.loop")
    dsn = route_dsn(pg_dsn)
    first = await append(outbox_path, 300, "first")
    a = Shipper(outbox_path, dsn, batch_size=50, lease_ttl=30)
    b = Shipper(outbox_path, dsn, batch_size=50, lease_ttl=30)
    await a.start()
    await a.drain(timeout=30)
    await b.start()
    try:
        await wait_for(lambda: any("another shipper holds the lease" in r.getMessage() for r in caplog.records), "b stands by")
        second = await append(outbox_path, 300, "second")
        await a.drain(timeout=30)
        assert (a.stats.shipped, b.stats.shipped) == (600, 0)
        await a.stop()  # releases the lease: b need not wait out the 30 s TTL
        third = await append(outbox_path, 200, "third")
        await b.drain(timeout=15)
        assert b.stats.shipped == 200
        assert any("took over the lease" in r.getMessage() for r in caplog.records)
    finally:
        await a.stop()
        await b.stop()
    ids, ledger_rows = await shipped(pg_dsn)
    assert sorted(ids) == sorted(first + second + third)
    assert ledger_rows == 800  # every batch's rows counted once: nothing was shipped twice


async def test_a_frozen_leader_is_replaced_and_on_waking_stands_by(
    outbox_path: Path, pg_dsn: str, route_dsn: Callable[[str], str], subprocess_env: dict[str, str]
) -> None:
    """SIGSTOP the leader (a paused container): the standby takes over once the lease expires;
    SIGCONT it: it says once that it lost the lease and ships nothing twice."""
    dsn = route_dsn(pg_dsn)
    await migrate(pg_dsn)
    expected = await append(outbox_path, 500, "before")
    leader = start_sidecar(outbox_path, dsn, subprocess_env, batch_size=100, ttl=2.0)
    standby: subprocess.Popen[str] | None = None
    try:
        await wait_for(lambda: _count(pg_dsn, 500), "the leader ships")
        standby = start_sidecar(outbox_path, dsn, subprocess_env, batch_size=100, ttl=2.0)
        os.kill(leader.pid, signal.SIGSTOP)
        expected += await append(outbox_path, 500, "frozen")
        await wait_for(lambda: _count(pg_dsn, 1000), "the standby takes over from the frozen leader")
        os.kill(leader.pid, signal.SIGCONT)
        expected += await append(outbox_path, 300, "woken")
        await wait_for(lambda: _count(pg_dsn, 1300), "everything ships after the leader wakes")
        await asyncio.sleep(1.0)  # the woken one's first renewal or batch: refused, it stands by
    finally:
        outputs = []
        for proc in (leader, standby):
            if proc is not None:
                proc.send_signal(signal.SIGCONT)
                proc.terminate()
                outputs.append(proc.communicate(timeout=60))
    assert leader.returncode == 0 and standby is not None and standby.returncode == 0, outputs
    leader_log = outputs[0][1]
    assert leader_log.count("lost the lease") == 1, leader_log[-3000:]
    ids, ledger_rows = await shipped(pg_dsn)
    assert sorted(ids) == sorted(expected)
    assert ledger_rows == 1300


async def _count(dsn: str, n: int) -> bool:
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT count(*) FROM outbox_events") >= n)
    except asyncpg.UndefinedTableError:
        return False
    finally:
        await conn.close()
