"""An append waits out another process's write lock, and names the problem when it lasts too long."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from outbox import Outbox, OutboxError, OutboxReader, schema


def hold_write_lock(path: Path, seconds: float, env: dict[str, str]) -> subprocess.Popen[str]:
    """Start a process that takes the events file's write lock for ``seconds``."""
    script = (
        "import sqlite3, sys, time\n"
        f"c = sqlite3.connect({str(path)!r}, isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "print('locked', flush=True)\n"
        f"time.sleep({seconds})\n"
        "c.execute('COMMIT')\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


@pytest.mark.parametrize("durability", ["process", "power"])
async def test_append_waits_for_another_writer(outbox_path: Path, subprocess_env: dict[str, str], durability: str) -> None:
    async with Outbox(outbox_path, durability=durability) as ob:  # type: ignore[arg-type]
        await ob.append("t", {"before": True})
        holder = hold_write_lock(outbox_path, 0.3, subprocess_env)
        started = time.monotonic()
        event_id = await ob.append("t", {"while": "locked"})
        waited = time.monotonic() - started
        holder.communicate(timeout=10)
    assert waited >= 0.2, "the append returned while the other process still held the lock"
    async with OutboxReader(outbox_path) as reader:
        assert event_id in [e.id for e in await reader.read_pending(10)]


async def test_a_lock_held_too_long_is_a_named_error(
    outbox_path: Path, subprocess_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(schema, "BUSY_TIMEOUT_MS", 200)
    async with Outbox(outbox_path) as ob:
        holder = hold_write_lock(outbox_path, 1.5, subprocess_env)
        with pytest.raises(OutboxError, match="stayed locked by another writer for 200 ms"):
            await ob.append("t", {"x": 1})
        holder.communicate(timeout=10)
        after = await ob.append("t", {"x": 2})  # the lock is free again: appends go on
    async with OutboxReader(outbox_path) as reader:
        assert [e.id for e in await reader.read_pending(10)] == [after]
