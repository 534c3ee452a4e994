"""The disk an outbox takes stays bounded under sustained appends, and ``max_bytes`` covers all of it.

PASSIVE checkpoints never let the WAL start over while appends keep coming: one appender flat
out beside a sidecar took the ``-wal`` to 4 GB in 15 s, and with ``max_bytes=32 MiB`` the files
reached 645 MiB, because only the database's pages were counted.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from outbox import Outbox, OutboxFullError
from outbox.append import WAL_BOUND_BYTES
from torture_kit import SIZES, Appender, ShipperRun, Tally, cli, keyed, outbox_ids, pick

SUFFIXES = ("", "-wal", "-shm", "-ship", "-ship-wal", "-ship-shm")
MIB = 1024 * 1024


def size_of(path: Path, suffixes: tuple[str, ...] = SUFFIXES) -> int:
    total = 0
    for suffix in suffixes:
        try:
            total += os.stat(f"{path}{suffix}").st_size
        except FileNotFoundError:
            pass
    return total


@pytest.mark.parametrize("size", SIZES)
async def test_wal_stays_bounded_under_sustained_appends(
    size: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    seconds = pick(size, 4.0, 40.0)
    path = tmp_path / "ob.db"
    async with Outbox(path):
        pass
    sidecar = ShipperRun(path, pg_dsn, tmp_path, subprocess_env, "--flush-interval", "0.02")
    sidecar.wait_shipping()
    appender = Appender(path, tmp_path, subprocess_env, "flat-out")
    appender.wait_ready()
    biggest, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline and appender.proc.poll() is None:
        biggest = max(biggest, size_of(path, ("-wal",)))
        await asyncio.sleep(0.01)
    appender.kill()
    assert sidecar.terminate(timeout=120) == 0, sidecar.output()[-2000:]
    assert cli("shipper", "drain", "--outbox", str(path), "--dsn", pg_dsn, env=subprocess_env).code == 0
    acked = appender.acknowledged()
    tally.notes["appends"], tally.notes["wal_max_mib"] = len(acked), round(biggest / MIB, 1)
    tally.faults, tally.fault = 1, f"{seconds:g} s of appends flat out"
    await tally.settle(pg_dsn, acked, committed=outbox_ids(path))
    # the bound is met by the checkpoint thread: a flat-out appender adds what it appends while
    # one checkpoint runs (at ~120 MB/s of WAL here, 10-20 MB), more if a RESTART finds readers
    # in the way and must wait for the next checkpoint; 72-81 MiB seen, 579 MiB in 4 s before.
    # The full run's 40 s met checkpoints whose fsync stalled for up to 1.7 s (150-475 MiB):
    # past 1.5x its bound, an append now waits for the checkpoints (72-100 MiB in 3 runs)
    assert biggest <= 2 * WAL_BOUND_BYTES, f"the -wal reached {biggest / MIB:.0f} MiB"


@pytest.mark.parametrize("size", SIZES)
async def test_max_bytes_covers_every_file_and_a_healthy_bot_is_not_throttled(
    size: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    """A bot appending ~2,000 events/s into ``max_bytes=2 MiB`` beside a healthy sidecar. Before,
    pruning ran once a minute: 11,368 of 20,000 appends at 1,000/s were refused as full, and
    the WAL was not counted at all. Now the files together stay within the limit (a little over
    for one measuring interval) and the appends get through."""
    limit, n = 2 * MIB, pick(size, 8_000, 60_000)
    path = tmp_path / "ob.db"
    async with Outbox(path):
        pass
    sidecar = ShipperRun(path, pg_dsn, tmp_path, subprocess_env, "--flush-interval", "0.02")
    sidecar.wait_shipping()
    acked: list[str] = []
    full, biggest, breakdown = 0, 0, ""
    try:
        async with Outbox(path, max_bytes=limit) as ob:
            for i in range(n):
                try:
                    acked.append(await ob.append("t", keyed("w", i, pad="x" * 200)))
                except OutboxFullError:
                    full += 1
                if i % 20 == 0:
                    now = size_of(path)
                    if now > biggest:
                        biggest, breakdown = now, ", ".join(f"{s or 'db'} {size_of(path, (s,)) // 1024} KiB" for s in SUFFIXES)
                    await asyncio.sleep(0.01)  # ~2,000 appends/s
    finally:
        assert sidecar.terminate(timeout=120) == 0, sidecar.output()[-2000:]
    assert cli("shipper", "drain", "--outbox", str(path), "--dsn", pg_dsn, env=subprocess_env).code == 0
    tally.notes["full"], tally.notes["files_max_mib"] = full, round(biggest / MIB, 2)
    tally.faults, tally.fault = full, "appends refused as full"
    await tally.settle(pg_dsn, acked)
    assert biggest <= limit * 1.25, f"the files reached {biggest / MIB:.1f} MiB with max_bytes={limit / MIB:.0f} MiB: {breakdown}"
    assert full <= n // 20, f"{full} of {n} appends refused although the sidecar kept up"
