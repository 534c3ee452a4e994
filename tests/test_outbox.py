"""The append path's lifecycle, files, ids and limits, against real files."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sqlite3
import stat
import time
import uuid
import warnings
from pathlib import Path

import pytest

from outbox import (
    NotAnOutboxError,
    Outbox,
    OutboxClosedError,
    OutboxCorruptError,
    OutboxError,
    OutboxFullError,
    OutboxReader,
    ship_path,
)
from outbox.ids import uuid7_time_ms


async def test_append_returns_time_ordered_uuid7_and_commits(outbox_path: Path) -> None:
    async with Outbox(outbox_path) as ob:
        ids = [await ob.append("clicks", {"n": i}) for i in range(300)]
    assert len(set(ids)) == 300
    assert ids == sorted(ids), "ids from one process sort in creation order"
    assert all(uuid.UUID(i).version == 7 for i in ids)
    # another connection (another process would do the same) sees every row, in order
    conn = sqlite3.connect(outbox_path)
    rows = conn.execute("SELECT id, topic, payload, created_at FROM events ORDER BY seq").fetchall()
    conn.close()
    assert [r[0] for r in rows] == ids
    assert [json.loads(r[2])["n"] for r in rows] == list(range(300))
    assert all(abs(r[3] // 1000 - uuid7_time_ms(r[0])) < 1000 for r in rows)


async def test_files_are_private(outbox_path: Path) -> None:
    async with Outbox(outbox_path) as ob:
        await ob.append("t", {})
        async with OutboxReader(outbox_path, create=True):  # a shipper's: it makes the side file
            for suffix in ("", "-wal", "-shm"):
                for base in (str(outbox_path), str(ship_path(outbox_path))):
                    mode = stat.S_IMODE(os.stat(base + suffix).st_mode)
                    assert mode == 0o600, f"{base}{suffix} has mode {oct(mode)}"


async def test_schema_version_and_identity_are_recorded(outbox_path: Path) -> None:
    async with Outbox(outbox_path) as ob:
        first_id = ob.outbox_id
    conn = sqlite3.connect(outbox_path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    assert conn.execute("PRAGMA application_id").fetchone()[0] == 0x4F425831
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()
    async with Outbox(outbox_path) as ob:
        assert ob.outbox_id == first_id


async def test_closed_outbox_refuses_appends(outbox_path: Path) -> None:
    ob = Outbox(outbox_path)
    with pytest.raises(OutboxClosedError, match="not open"):
        await ob.append("t", {})
    await ob.open()
    await ob.close()
    with pytest.raises(OutboxClosedError, match="is closed"):
        await ob.append("t", {})
    with pytest.raises(OutboxClosedError):
        await ob.open()
    await ob.close()  # closing twice is harmless


async def test_unclosed_outbox_warns(outbox_path: Path) -> None:
    ob = Outbox(outbox_path)
    await ob.open()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        del ob
        gc.collect()
    assert any(issubclass(w.category, ResourceWarning) for w in caught)


async def test_max_bytes_raises_full_and_keeps_what_was_written(outbox_path: Path) -> None:
    accepted = []
    async with Outbox(outbox_path, max_bytes=256 * 1024) as ob:
        with pytest.raises(OutboxFullError, match="is full"):
            for i in range(100_000):
                accepted.append(await ob.append("t", {"i": i, "pad": "x" * 200}))
        with pytest.raises(OutboxFullError):
            await ob.append("t", {"pad": "x" * 200})
    assert 200 < len(accepted) < 2000  # max_bytes covers the WAL and side files too, not only pages
    async with OutboxReader(outbox_path) as reader:
        ids = [e.id async for chunk in reader.iter_events() for e in chunk]
    assert ids == accepted


async def test_not_an_outbox_and_garbage_files_are_named(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    conn = sqlite3.connect(other)
    conn.execute("CREATE TABLE x (a)")
    conn.commit()
    conn.close()
    with pytest.raises(NotAnOutboxError, match="not an outbox"):
        await Outbox(other).open()
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(os.urandom(8192))
    with pytest.raises(OutboxCorruptError, match="damaged or not a SQLite file"):
        await Outbox(garbage).open()
    with pytest.raises(OutboxError, match="no outbox at"):
        await OutboxReader(tmp_path / "missing.db").open()
    with pytest.raises(OutboxError, match="is a directory"):
        await Outbox(tmp_path).open()


async def test_quarantine_moves_a_damaged_file_aside(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    path.write_bytes(b"garbage" * 1000)
    async with Outbox(path, on_corrupt="quarantine") as ob:
        event_id = await ob.append("t", {"after": "damage"})
    kept = [p for p in tmp_path.iterdir() if ".corrupt-" in p.name]
    assert len(kept) == 1 and kept[0].read_bytes() == b"garbage" * 1000
    async with OutboxReader(path) as reader:
        assert [e.id for e in await reader.read_pending(10)] == [event_id]


async def test_power_durability_commits_concurrent_appends_together(outbox_path: Path) -> None:
    async with Outbox(outbox_path, durability="power") as ob:
        ids = await asyncio.gather(*(ob.append("t", {"i": i}) for i in range(500)))
        conn = sqlite3.connect(outbox_path)
        assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == 500
        conn.close()
    assert len(set(ids)) == 500


async def test_power_durability_reports_bad_input_per_append(outbox_path: Path) -> None:
    async with Outbox(outbox_path, durability="power") as ob:
        results = await asyncio.gather(
            ob.append("t", {"ok": 1}), ob.append("t", {"bad": float("nan")}), return_exceptions=True
        )
    assert isinstance(results[0], str) and isinstance(results[1], ValueError)


async def test_checkpoints_keep_the_wal_small(outbox_path: Path) -> None:
    """A bot appends in bursts; between bursts the side thread's checkpoint lets the WAL restart."""
    sizes = []
    async with Outbox(outbox_path, checkpoint_every=200) as ob:
        for burst in range(40):
            for i in range(250):
                await ob.append("t", {"i": i, "pad": "y" * 200})
            await asyncio.sleep(0.1)
            sizes.append(os.stat(f"{outbox_path}-wal").st_size)
    # 10,000 appends write ~40 MB of WAL frames; restarts keep the file near one burst's worth
    assert max(sizes) < 9 * 1024 * 1024, sizes
    assert sizes[-1] < 4 * 1024 * 1024, sizes


async def test_appends_faster_than_the_checkpoints_wait_for_them(outbox_path: Path) -> None:
    """A checkpoint's fsync can stall for as long as the disk needs (1.7 s seen, the appender
    flat out): the WAL grew meanwhile to 475 MiB of a 64 MiB bound. Here each checkpoint is
    held up 0.2 s before it runs (the stall) and the bound is 1 MiB; an append that finds the
    WAL past 1.5 times it must wait for the checkpoints, so the file stays near that."""
    bound = 1024 * 1024
    sizes = []
    async with Outbox(outbox_path, checkpoint_every=100) as ob:
        ob._wal_bound = bound
        real = ob._checkpoint

        def stalled(truncate: bool = False) -> None:
            time.sleep(0.2)
            real(truncate)

        ob._checkpoint = stalled  # type: ignore[method-assign]
        for i in range(3_000):
            await ob.append("t", {"i": i, "pad": "y" * 400})
            if i % 50 == 0:
                sizes.append(os.stat(f"{outbox_path}-wal").st_size)
    # without the wait the WAL reached 15 MiB (60 MiB over 12,000 appends); with it, 1.5x the
    # bound plus the frames of the appends between two looks at it (100 appends, ~0.5 MiB)
    assert max(sizes) < 2.5 * bound, [s // 1024 for s in sizes[::10]]
    async with OutboxReader(outbox_path) as reader:
        assert await reader.last_seq() == 3_000
