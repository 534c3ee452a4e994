"""Kill -9 real appending processes and count: every acknowledged id is in the file, none twice."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from child_procs import start_appender
from outbox import Outbox, OutboxReader

def kill_and_collect(proc: subprocess.Popen[str]) -> list[str]:
    os.kill(proc.pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    lines = out.splitlines()
    # the last line may have been cut mid-write by the kill: only whole ids were acknowledged
    return [line for line in lines if len(line) == 36]


def ids_in_file(path: Path) -> list[str]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT id FROM events ORDER BY seq")]
    finally:
        conn.close()


def rounds() -> int:
    return int(os.environ.get("OUTBOX_CRASH_ROUNDS", "6"))


@pytest.mark.parametrize("durability", ["process", "power"])
def test_sigkill_never_loses_an_acknowledged_event(outbox_path: Path, subprocess_env: dict[str, str], durability: str) -> None:
    rng = random.Random(7)
    acknowledged: list[str] = []
    for _ in range(rounds()):
        proc = start_appender(outbox_path, subprocess_env, durability=durability)
        time.sleep(rng.uniform(0.05, 0.4))
        acknowledged += kill_and_collect(proc)
    stored = ids_in_file(outbox_path)
    assert len(acknowledged) > 100 * rounds() if durability == "process" else len(acknowledged) > 10
    missing = set(acknowledged) - set(stored)
    assert not missing, f"{len(missing)} acknowledged events lost"
    assert len(stored) == len(set(stored)), "an event was stored twice"
    print(f"\n{durability}: {rounds()} kills, {len(acknowledged)} acknowledged, {len(stored)} stored, 0 lost, 0 twice")


def test_several_processes_append_to_one_file_at_once(outbox_path: Path, subprocess_env: dict[str, str]) -> None:
    procs = [start_appender(outbox_path, subprocess_env, topic=f"shard{i}") for i in range(4)]
    time.sleep(1.0)
    acknowledged = [event_id for proc in procs for event_id in kill_and_collect(proc)]
    stored = ids_in_file(outbox_path)
    assert set(acknowledged) <= set(stored)
    assert len(stored) == len(set(stored))
    conn = sqlite3.connect(outbox_path)
    per_topic = dict(conn.execute("SELECT topic, count(*) FROM events GROUP BY topic").fetchall())
    conn.close()
    assert sorted(per_topic) == ["shard0", "shard1", "shard2", "shard3"]
    assert all(n > 50 for n in per_topic.values()), per_topic


async def test_reopen_after_a_crash_mid_transaction(outbox_path: Path, subprocess_env: dict[str, str]) -> None:
    """A process killed while its write transaction is open leaves a hot WAL; the next opener recovers it."""
    async with Outbox(outbox_path) as ob:
        committed = await ob.append("t", {"before": True})
    script = (
        "import sqlite3, os, signal, sys\n"
        f"c = sqlite3.connect({str(outbox_path)!r}, isolation_level=None)\n"
        "c.execute('BEGIN IMMEDIATE')\n"
        "for i in range(5000):\n"
        "    c.execute(\"INSERT INTO events(id, topic, payload, created_at) VALUES ('x', 't', '{}', 0)\")\n"
        "print('open', flush=True)\n"
        "sys.stdin.readline()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=subprocess_env)
    assert proc.stdout is not None and proc.stdout.readline() == "open\n"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    async with Outbox(outbox_path) as ob:
        after = await ob.append("t", {"after": True})
    assert ids_in_file(outbox_path) == [committed, after]
    async with OutboxReader(outbox_path) as reader:
        assert (await reader.status()).pending == 2
