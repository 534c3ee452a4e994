"""Kill -9 several processes appending to one outbox file at once, at random moments, many times.

Each round starts a few appenders together (mixed durability, mixed checkpoint rhythm), kills
each at its own random moment, and checks the file: sound, every acknowledged id present, none
twice. At the end a shipper drains the lot and Postgres is counted.
"""

from __future__ import annotations

import asyncio
import random
import signal
import time
from pathlib import Path

import pytest

from shipper import Shipper
from torture_kit import SIZES, Appender, Tally, integrity, outbox_ids, pick


@pytest.mark.parametrize("size", SIZES)
async def test_sigkill_of_several_appenders_at_once(
    size: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    rounds = pick(size, 5, 40)
    writers = pick(size, 3, 4)
    rng = random.Random(20240701)
    path = tmp_path / "events.db"
    acknowledged: list[str] = []
    for round_ in range(rounds):
        go = tmp_path / f"go-{round_}"
        procs = [
            Appender(
                path,
                tmp_path,
                subprocess_env,
                f"r{round_}w{j}",
                "--go",
                str(go),
                "--durability",
                rng.choice(["process", "process", "power"]),
                "--checkpoint-every",
                str(rng.choice([1, 64, 1000])),
            )
            for j in range(writers)
        ]
        go.touch()
        try:
            for proc in procs:
                proc.wait_ready()
            started = time.monotonic()
            for at, proc in sorted(((rng.uniform(0.0, 0.4), p) for p in procs), key=lambda item: item[0]):
                await asyncio.sleep(max(0.0, started + at - time.monotonic()))
                proc.kill()
        finally:
            for proc in procs:
                proc.kill()
        for proc in procs:
            assert proc.proc.returncode == -signal.SIGKILL, proc.stderr()
            acknowledged += proc.acknowledged()
        assert integrity(path) == "ok"
        stored = outbox_ids(path)
        assert len(stored) == len(set(stored)), "an event is in the outbox twice"
        missing = set(acknowledged) - set(stored)
        assert not missing, f"round {round_}: {len(missing)} acknowledged events are not in the file"

    assert len(acknowledged) > 100 * rounds, "the kills should land mid-stream, not before the appends"
    async with Shipper(path, pg_dsn, backoff_cap=0.5) as s:
        await s.drain(timeout=300)
    committed = outbox_ids(path)
    tally.faults, tally.fault = rounds * writers, f"SIGKILLs of appenders, {writers} at once"
    tally.notes["committed_unacknowledged"] = len(set(committed) - set(acknowledged))
    await tally.settle(pg_dsn, acknowledged, committed=committed)
