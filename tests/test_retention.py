"""Retention counts from when an event shipped, by a clock a jump cannot fool.

Before: events restored with ``outbox import`` (made 30 days ago) were pruned by the first
drain (1 of 3,000 kept), and ``prune --older-than 30m`` on a clock that had jumped ahead deleted
events shipped a moment before.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from click.testing import CliRunner

from outbox import OutboxReader
from outbox.cli import outbox as outbox_cli
from outbox.maintenance import prune
from shipper import Shipper

N = 3000


def old_records(path: Path, days: int) -> Path:
    made = datetime.now(timezone.utc) - timedelta(days=days)
    dump = path.with_suffix(".jsonl")
    with open(dump, "w", encoding="utf-8") as out:
        for i in range(N):
            out.write(json.dumps({"id": f"0190d1a0-0000-7000-8000-{i:012d}", "topic": "t", "payload": {"i": i},
                                  "created_at": (made + timedelta(seconds=i)).isoformat()}) + "\n")
    return dump


async def ship_imported(outbox_path: Path, pg_dsn: str) -> None:
    result = await asyncio.to_thread(CliRunner().invoke, outbox_cli, ["import", str(outbox_path), str(old_records(outbox_path, 30))])
    assert result.exit_code == 0, result.output
    async with Shipper(outbox_path, pg_dsn, housekeeping_interval=0.01) as s:  # retention 7 days
        assert await s.drain(timeout=60) == N
        await s.drain(timeout=60)  # a few housekeeping passes
    async with OutboxReader(outbox_path) as reader:
        status = await reader.status()
    assert (status.shipped, status.pending) == (N, 0), "shipped a moment ago: none is past a 7-day retention"


async def test_imported_old_events_are_kept_for_the_retention_after_they_ship(outbox_path: Path, pg_dsn: str) -> None:
    await ship_imported(outbox_path, pg_dsn)


async def test_a_clock_jump_does_not_prune_what_just_shipped(
    outbox_path: Path, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await ship_imported(outbox_path, pg_dsn)
    ahead = 8 * 86400 * 10**9  # the wall clock jumps 8 days ahead
    real_ns, real_s = time.time_ns, time.time
    monkeypatch.setattr(time, "time_ns", lambda: real_ns() + ahead)
    monkeypatch.setattr(time, "time", lambda: real_s() + ahead / 1e9)
    result = await asyncio.to_thread(CliRunner().invoke, outbox_cli, ["prune", str(outbox_path), "--older-than", "30m"])
    assert result.exit_code == 0 and "pruned 0 " in result.output, result.output
    async with OutboxReader(outbox_path) as reader:
        assert await prune(reader, older_than_us=time.time_ns() // 1000 - 7 * 86400 * 10**6) == 0  # the shipper's own pass
        assert (await reader.status()).shipped == N
        assert await prune(reader, older_than_us=time.time_ns() // 1000) == N - 1  # "older than 0s": all shipped but the newest
