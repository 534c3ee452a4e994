"""Running out of room: the outbox's own ``max_bytes``, and a real filesystem filled to the brim.

Either way an append that does not fit raises ``OutboxFullError`` with a clear message and
writes nothing; the file stays sound; every acknowledged event survives; and once room is made
(the shipper pruning shipped events early, or space freed on the disk) appends succeed again
and everything ships.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
from pathlib import Path

import pytest

from outbox import Outbox, OutboxFullError, OutboxReader
from shipper import Shipper
from torture_kit import SIZES, ShipperRun, Tally, count_postgres, integrity, keyed, outbox_ids, pick


async def fill(ob: Outbox, writer: str, acked: list[str]) -> str:
    """Append until the outbox refuses; return the refusal's message."""
    for i in range(10**7):
        try:
            acked.append(await ob.append("t", keyed(writer, i, pad="f" * 200)))
        except OutboxFullError as exc:
            return str(exc)
    raise AssertionError("the outbox never filled up")


async def wait_for_room(ob: Outbox, writer: str, acked: list[str], timeout: float = 60) -> int:
    """Retry an append until it succeeds; return how many were refused meanwhile."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    refused = 0
    while True:
        try:
            acked.append(await ob.append("t", keyed(writer, 0)))
            return refused
        except OutboxFullError:
            refused += 1
            assert loop.time() < deadline, "no room was made"
            await asyncio.sleep(0.02)


async def accounted_for(path: Path, dsn: str, acked: list[str]) -> None:
    """Every acknowledged event is in the file or already in Postgres; the file is sound."""
    assert integrity(path) == "ok"
    held = set(outbox_ids(path)) | (await count_postgres(dsn)).ids
    missing = set(acked) - held
    assert not missing, f"{len(missing)} acknowledged events are gone"


@pytest.mark.parametrize("size", SIZES)
async def test_max_bytes_reached_then_the_shipper_makes_room(size: str, tmp_path: Path, pg_dsn: str, tally: Tally) -> None:
    cycles = pick(size, 3, 20)
    path = tmp_path / "events.db"
    acked: list[str] = []
    refused = 0
    async with Outbox(path, max_bytes=512 * 1024) as ob:
        for cycle in range(cycles):
            message = await fill(ob, f"c{cycle}", acked)
            tally.faults += 1
            assert message.startswith(f"outbox {path} is full") and "limit 524288" in message, message
            await accounted_for(path, pg_dsn, acked)
            # shipping frees room: over half of max_bytes, the shipper prunes shipped events early
            async with Shipper(path, pg_dsn, outbox=ob, housekeeping_interval=0.05, backoff_cap=0.2):
                refused += await wait_for_room(ob, f"c{cycle}-after", acked)
            await accounted_for(path, pg_dsn, acked)
        async with Shipper(path, pg_dsn, outbox=ob) as s:
            await s.drain(timeout=120)
    tally.fault = "times max_bytes was reached"
    tally.notes["appends_refused_while_full"] = refused + cycles
    await tally.settle(pg_dsn, acked)


def mount_tmpfs(where: Path, size: str) -> None:
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a real full filesystem needs root to mount a small tmpfs; not root here")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(where)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"the sandbox refused to mount a small tmpfs: {done.stderr.strip()}")


def ballast(where: Path, leave: int) -> Path:
    """Fill the filesystem at ``where`` until only ``leave`` bytes are free."""
    path = where / "ballast"
    stats = os.statvfs(where)
    room = stats.f_bavail * stats.f_frsize - leave
    with open(path, "wb") as out:
        chunk = b"\0" * 65536
        try:
            while room > 0:
                room -= out.write(chunk[: min(len(chunk), room)])
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    return path


@pytest.mark.parametrize("size", SIZES)
async def test_a_real_full_filesystem(size: str, tmp_path: Path, pg_dsn: str, tally: Tally) -> None:
    """A 32 MB tmpfs holding the outbox, filled by a ballast file; the ballast is then deleted.

    32 MB, not less: the WAL may take up to its 8 MB journal_size_limit before it is cut back,
    and the room freed must outlast it for the test to measure the outbox, not the WAL."""
    cycles = pick(size, 2, 10)
    disk = tmp_path / "small"
    mount_tmpfs(disk, "32m")
    path = disk / "events.db"
    acked: list[str] = []
    errors: set[str] = set()
    try:
        async with Outbox(path) as ob, Shipper(path, pg_dsn, outbox=ob, backoff_cap=0.2) as s:
            await s.drain(timeout=30)  # the side file exists before the disk fills
            for cycle in range(cycles):
                heavy = ballast(disk, 1024 * 1024)
                message = await fill(ob, f"c{cycle}", acked)
                tally.faults += 1
                errors.add(message)
                await accounted_for(path, pg_dsn, acked)
                await asyncio.sleep(0.3)  # the shipper runs on a full disk meanwhile
                heavy.unlink()
                await wait_for_room(ob, f"c{cycle}-after", acked)
                await s.drain(timeout=120)
                await accounted_for(path, pg_dsn, acked)
        async with OutboxReader(path) as reader:
            status = await reader.status()
        assert status.pending == 0 and status.dead == 0
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert errors == {f"the disk holding outbox {path} is full"}, errors
    tally.fault = "times the filesystem filled up"
    await tally.settle(pg_dsn, acked)


@pytest.mark.parametrize("size", SIZES)
async def test_started_on_a_full_disk(
    size: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    """Opening on a full disk: the ``-shm`` cannot be made (SQLITE_IOERR_SHMSIZE, which SQLite
    reports as "disk I/O error"). The bot must be told the disk is full, and the sidecar must wait
    for room and retry instead of exiting; once room is made, everything ships."""
    disk = tmp_path / "small"
    mount_tmpfs(disk, "16m")  # room for the WAL of the appends before (a 4 KB frame each)
    path = disk / "events.db"
    try:
        async with Outbox(path) as ob:
            acked = [await ob.append("t", keyed("before", i)) for i in range(pick(size, 300, 1000))]
        heavy = ballast(disk, 0)
        with pytest.raises(OutboxFullError, match="is full"):
            async with Outbox(path):
                pass
        sidecar = ShipperRun(path, pg_dsn, tmp_path, subprocess_env, "--flush-interval", "0.02")  # its log is not on the full disk
        try:
            await asyncio.sleep(pick(size, 1.5, 5.0))
            assert sidecar.proc.poll() is None, f"the sidecar exited on a full disk: {sidecar.output()[-1500:]}"
            assert "is full" in sidecar.output(), sidecar.output()[-1500:]
            heavy.unlink()
            sidecar.wait_shipping(timeout=60)
            async with Outbox(path) as ob:
                acked += [await ob.append("t", keyed("after", i)) for i in range(100)]
        finally:
            assert sidecar.terminate(timeout=120) == 0, sidecar.output()[-1500:]
        async with OutboxReader(path) as reader:
            assert (await reader.status()).pending == 0
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    tally.faults, tally.fault = 1, "sidecar started on a full disk"
    await tally.settle(pg_dsn, acked)


async def test_sigterm_while_waiting_for_room_exits_0(tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str]) -> None:
    """``shipper run`` stopped while it waits on a full disk: exit 0, as at any other moment
    (its SIGTERM handler used to be installed only after it had opened the outbox: -15)."""
    disk = tmp_path / "small"
    mount_tmpfs(disk, "16m")
    path = disk / "events.db"
    try:
        async with Outbox(path) as ob:
            for i in range(100):
                await ob.append("t", keyed("before", i))
        heavy = ballast(disk, 0)
        sidecar = ShipperRun(path, pg_dsn, tmp_path, subprocess_env, "--flush-interval", "0.02")
        try:
            for _ in range(300):
                if "is full" in sidecar.output() or sidecar.proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            assert sidecar.proc.poll() is None and "is full" in sidecar.output(), sidecar.output()[-1500:]
        finally:
            code = sidecar.terminate(timeout=60)
        assert code == 0, sidecar.output()[-1500:]
        heavy.unlink()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
