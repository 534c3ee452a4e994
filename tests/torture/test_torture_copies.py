"""An outbox copied beside itself: a VM clone, or a backup restored next to the original.

Both copies hold the same events up to the split and the same ``outbox_id``; both go on
appending, each shipped by its own sidecar into one Postgres. Before, their ledger ranges
collided: the copy's batches were refused as "already shipped" and its events silently lost
(status said pending 0, drain "shipped 0"), or the original was declared "has lost events" and
stopped. A copy must notice it is one and take an identity of its own, so every event of both
lands once, by id (the shared ones through ``ON CONFLICT``).
"""

from __future__ import annotations

import asyncio
import shutil
import sqlite3
from pathlib import Path

import pytest

from outbox import Outbox, OutboxReader
from outbox.identity import file_identity
from shipper import Shipper
from torture_kit import SIZES, ShipperRun, Tally, cli, keyed, pick

SUFFIXES = ("", "-wal", "-shm", "-ship", "-ship-wal", "-ship-shm")


def copy_outbox(src: Path, dst: Path) -> None:
    """``cp`` every file of the outbox, as a backup tool or a VM clone would."""
    for suffix in SUFFIXES:
        if Path(f"{src}{suffix}").exists():
            shutil.copy2(f"{src}{suffix}", f"{dst}{suffix}")


def keep_identity(path: Path) -> None:
    """Make a copy look like its original from the inside, as a VM clone does: same device,
    inode and machine id. Only Postgres's ledger can then tell the two apart."""
    conn = sqlite3.connect(path)
    with conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'file_identity'", (file_identity(path),))
    conn.close()


async def append(path: Path, writer: str, n: int) -> list[str]:
    async with Outbox(path) as ob:
        ids = []
        for i in range(n):
            ids.append(await ob.append("t", keyed(writer, i)))
            if i % 50 == 0:
                await asyncio.sleep(0.005)
        return ids


@pytest.mark.parametrize("how", ["cp", "vm clone"])
@pytest.mark.parametrize("size", SIZES)
async def test_both_copies_ship_every_event_once(
    size: str, how: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    shipped_before, pending_at_split, each = pick(size, 300, 3000), pick(size, 100, 1000), pick(size, 600, 10_000)
    original, copy = tmp_path / "ob.db", tmp_path / "copy" / "ob.db"
    copy.parent.mkdir()
    acked = await append(original, "shared", shipped_before)
    async with Shipper(original, pg_dsn) as s:
        await s.drain(timeout=60)
    async with Outbox(original) as ob:
        acked += [await ob.append("t", keyed("split", i)) for i in range(pending_at_split)]
        copy_outbox(original, copy)  # while open: the -wal holds the latest events
    if how == "vm clone":
        keep_identity(copy)
    sidecars = [
        ShipperRun(p, pg_dsn, tmp_path, subprocess_env, "--flush-interval", "0.02", tag=tag)
        for p, tag in ((original, "-original"), (copy, "-copy"))
    ]
    try:
        for sidecar in sidecars:
            sidecar.wait_shipping()
        # the copy gets ahead first, then the original: both orders of the old failures
        acked += await append(copy, "copy", each // 2)
        acked += await append(original, "original", each)
        acked += await append(copy, "copy2", each - each // 2)
    finally:
        codes = [sidecar.terminate() for sidecar in sidecars]
    assert codes == [0, 0], [s.output()[-3000:] for s in sidecars]
    for path in (original, copy):  # a one-off drain on each, no --timeout: must finish, and ship what is left
        result = cli("shipper", "drain", "--outbox", str(path), "--dsn", pg_dsn, "--json", env=subprocess_env, timeout=120)
        assert result.code == 0, result.stderr
    for path in (original, copy):
        async with OutboxReader(path) as reader:
            status = await reader.status()
        assert (status.pending, status.dead) == (0, 0), (path, status)
    tally.faults, tally.fault = 1, f"outbox copied ({how}), both copies shipped"
    await tally.settle(pg_dsn, acked)
    async with OutboxReader(original) as a, OutboxReader(copy) as b:
        assert a.outbox_id != b.outbox_id, "the copy must have taken an identity of its own"


async def test_a_copy_takes_a_new_identity_and_keeps_its_progress(tmp_path: Path, pg_dsn: str) -> None:
    """cp of the files: the copy's first open notices, forks, and keeps cursor and dead letters."""
    original, copy = tmp_path / "a.db", tmp_path / "b.db"
    ids = await append(original, "a", 50)
    async with Shipper(original, pg_dsn) as s:
        await s.drain(timeout=30)
    copy_outbox(original, copy)
    async with OutboxReader(original) as reader:
        first = reader.outbox_id
    async with Outbox(copy) as ob:
        assert ob.outbox_id != first
        more = await ob.append("t", keyed("b", 0))
    async with OutboxReader(copy) as reader:
        status = await reader.status()
        assert reader.outbox_id == ob.outbox_id
    assert (status.shipped, status.pending) == (50, 1)
    async with OutboxReader(original) as reader:
        assert reader.outbox_id == first, "the original keeps its identity"
    async with Shipper(copy, pg_dsn) as s:
        assert await s.drain(timeout=30) == 1
    del ids, more
