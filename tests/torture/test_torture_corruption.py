"""A damaged outbox file: truncated, overwritten with garbage, emptied, its WAL deleted.

The damage must be *detected* with a clear error naming the file (never a raw SQLite
exception, never a silent fresh start that skips events), the damaged file must be *kept*
(``on_corrupt="quarantine"`` moves it aside, byte for byte), appends must *continue* in a fresh
file that ships normally, and reopening must not quarantine again (no crash loop) -- also when
several processes meet the damage at the same moment.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from outbox import Outbox, OutboxCorruptError, OutboxReader, ship_path
from shipper import Shipper
from torture_kit import SIZES, Appender, ShipperRun, Tally, cli, count_postgres, keyed, outbox_ids, pick, sigkill

_SIDE_SUFFIXES = ("-wal", "-shm", "-ship", "-ship-wal", "-ship-shm")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def asides(path: Path) -> list[Path]:
    """The damaged files quarantine set aside (their own -wal and -ship files left out)."""
    return sorted(
        p
        for p in path.parent.iterdir()
        if p.name.startswith(f"{path.name}.corrupt-") and not p.name.endswith(_SIDE_SUFFIXES)
    )


def truncate_half(path: Path) -> None:
    os.truncate(path, os.path.getsize(path) // 2)


def garbage_everywhere(path: Path) -> None:
    path.write_bytes(random.Random(1).randbytes(os.path.getsize(path)))


def garbage_after_header(path: Path) -> None:
    """Keep SQLite's header page, scribble over the next ones (the outbox's meta table)."""
    with open(path, "r+b") as f:
        f.seek(4096)
        f.write(random.Random(2).randbytes(3 * 4096))


def emptied(path: Path) -> None:
    os.truncate(path, 0)


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": truncate_half,
    "garbage": garbage_everywhere,
    "garbage_after_header": garbage_after_header,
    "emptied": emptied,
}


async def shipped_outbox(path: Path, dsn: str, n: int, writer: str = "before") -> list[str]:
    async with Outbox(path) as ob:
        acked = [await ob.append("t", keyed(writer, i, pad="b" * 100)) for i in range(n)]
    async with Shipper(path, dsn) as s:
        await s.drain(timeout=120)
    return acked


async def quarantined_then_continues(path: Path, dsn: str, damaged: str, reopen: int, tally: Tally) -> list[str]:
    """Open with quarantine: the damaged file is kept aside, appends go on in a fresh one."""
    acked: list[str] = []
    for attempt in range(reopen):
        async with Outbox(path, on_corrupt="quarantine") as ob:
            acked += [await ob.append("t", keyed(f"after{attempt}", i)) for i in range(500)]
    (aside,) = asides(path)  # one, however often it was reopened: no crash loop
    assert digest(aside) == damaged, "the damaged file must be kept byte for byte"
    async with Shipper(path, dsn) as s:
        await s.drain(timeout=120)
    tally.notes["reopened"] = reopen
    return acked


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("damage", sorted(DAMAGE))
async def test_damaged_file_is_detected_kept_and_replaced(
    size: str, damage: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    path = tmp_path / "events.db"
    before = await shipped_outbox(path, pg_dsn, pick(size, 3000, 30_000))
    DAMAGE[damage](path)
    damaged = digest(path)
    with pytest.raises(OutboxCorruptError, match=f"outbox {path} "):
        async with Outbox(path):
            pass
    with pytest.raises(OutboxCorruptError, match=str(path)):
        async with OutboxReader(path):
            pass
    status = cli("outbox", "status", str(path), env=subprocess_env)
    assert status.code == 3 and len(status.stderr.splitlines()) == 1 and "Traceback" not in status.stderr, status
    assert digest(path) == damaged, "detecting the damage must not touch the file"
    after = await quarantined_then_continues(path, pg_dsn, damaged, pick(size, 3, 10), tally)
    tally.faults, tally.fault = 1, f"outbox file {damage.replace('_', ' ')}"
    await tally.settle(pg_dsn, before + after)


async def caught_up(path: Path, seq: int) -> None:
    for _ in range(1000):
        async with OutboxReader(path) as reader:
            if await reader.cursor() >= seq:
                return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the sidecar did not ship up to seq {seq}")


@pytest.mark.parametrize("size", SIZES)
async def test_wal_deleted_after_its_events_shipped(
    size: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    """A killed appender leaves its events in the WAL; a sidecar ships them; the WAL is deleted.

    The file now ends below what its side file says was shipped: new events would reuse those
    seqs and be skipped as shipped. That must be an error, and quarantine must start afresh."""
    path = tmp_path / "events.db"
    first = await shipped_outbox(path, pg_dsn, 10)
    run = ShipperRun(path, pg_dsn, tmp_path, subprocess_env, "--flush-interval", "0.01")
    run.wait_shipping()
    await caught_up(path, 10)  # its start-up checkpoint is behind it: the next checkpoint is a minute away
    await asyncio.sleep(0.2)
    appender = Appender(path, tmp_path, subprocess_env, "w", "--checkpoint-every", str(10**9))
    appender.wait_ready()
    await asyncio.sleep(pick(size, 0.3, 0.5))
    appender.kill()
    before = first + appender.acknowledged()
    await caught_up(path, len(before))  # then kill the sidecar too: the WAL stays behind
    sigkill(run.proc)
    shipped = (await count_postgres(pg_dsn)).ids  # the last one may be committed but not acknowledged
    assert set(before) <= shipped
    os.remove(f"{path}-wal")
    damaged = digest(path)
    with pytest.raises(OutboxCorruptError, match="lost"):
        async with Outbox(path):
            pass
    with pytest.raises(OutboxCorruptError, match="lost"):
        async with OutboxReader(path):
            pass
    # a gap nothing explains: one clear error and a stop, never a retry loop (no --timeout here)
    drain = cli("shipper", "drain", "--outbox", str(path), "--dsn", pg_dsn, env=subprocess_env, timeout=60)
    assert drain.code != 0 and "has lost events" in drain.stderr and "Traceback" not in drain.stderr, drain
    after = await quarantined_then_continues(path, pg_dsn, damaged, pick(size, 3, 10), tally)
    tally.faults, tally.fault = 1, "WAL deleted after its events shipped"
    await tally.settle(pg_dsn, before + after, committed=shipped | set(after))


@pytest.mark.parametrize("size", SIZES)
async def test_several_processes_meet_the_damage_at_once(
    size: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    """Shards starting together on a damaged file: one quarantine, one fresh file, no event stranded."""
    rounds, writers = pick(size, 3, 15), 8
    path = tmp_path / "events.db"
    acked: list[str] = []
    for round_ in range(rounds):
        acked += await shipped_outbox(path, pg_dsn, 200, f"before{round_}")
        garbage_everywhere(path)
        damaged = digest(path)
        go = tmp_path / f"go-{round_}"
        procs = [
            Appender(path, tmp_path, subprocess_env, f"r{round_}w{j}", "--go", str(go), "--on-corrupt", "quarantine", "--count", "300")
            for j in range(writers)
        ]
        go.touch()
        for proc in procs:
            assert proc.wait() == 0, proc.stderr()
            acked += proc.acknowledged()
        tally.faults += 1
        kept = [p for p in asides(path) if digest(p) == damaged]
        assert len(kept) == 1, f"the damaged file should be kept once, found {len(kept)}"
        assert len(outbox_ids(path)) == writers * 300, "every shard's events belong in the one fresh file"
        for aside in asides(path):
            aside.rename(aside.with_name(f"done-{round_}-{aside.name}"))
    async with Shipper(path, pg_dsn) as s:
        await s.drain(timeout=120)
    tally.fault = f"damaged files met by {writers} processes at once"
    await tally.settle(pg_dsn, acked)


async def test_file_restored_from_an_older_copy(
    tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    """The events file put back from an older backup, without its side file: Postgres's ledger
    is ahead of the file. Before, the shipper refused it ("has lost events") until an operator
    exported and re-imported it. A restored file is a copy (its inode changed): it takes a new
    identity, and its old events and the ones appended since all land, once."""
    path = tmp_path / "events.db"
    old = await shipped_outbox(path, pg_dsn, 1000, "old")
    backup = tmp_path / "backup.db"
    backup.write_bytes(path.read_bytes())
    newer = await shipped_outbox(path, pg_dsn, 1000, "newer")  # shipped, then lost with the restore
    for suffix in ("", "-ship"):
        Path(f"{path}{suffix}").unlink()
    backup.rename(path)
    async with Outbox(path) as ob:
        fresh = [await ob.append("t", keyed("fresh", i)) for i in range(300)]
    drain = cli("shipper", "drain", "--outbox", str(path), "--dsn", pg_dsn, "--json", env=subprocess_env, timeout=120)
    assert drain.code == 0, drain
    async with OutboxReader(path) as reader:
        status = await reader.status()
    assert (status.pending, status.dead) == (0, 0), status
    tally.faults, tally.fault = 1, "events file restored from an older copy"
    await tally.settle(pg_dsn, old + newer + fresh)


async def test_damaged_side_file_stops_the_shipper_not_the_bot(
    tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    """The ``-ship`` file (progress, dead letters) damaged: appends carry on, the shipper stops
    with an error naming that file, and nothing is marked shipped that is not in Postgres."""
    path = tmp_path / "events.db"
    before = await shipped_outbox(path, pg_dsn, 1000)
    garbage_everywhere(ship_path(path))
    async with Outbox(path) as ob:
        after = [await ob.append("t", keyed("after", i)) for i in range(500)]
    with pytest.raises(OutboxCorruptError, match=f"{ship_path(path)}"):
        async with Shipper(path, pg_dsn):
            pass
    run = cli("shipper", "drain", "--outbox", str(path), "--dsn", pg_dsn, env=subprocess_env)
    assert run.code == 3 and len(run.stderr.splitlines()) == 1 and f"{ship_path(path)}" in run.stderr, run
    tally.faults, tally.fault = 1, "side file overwritten with garbage"
    tally.notes["pending_until_repaired"] = len(after)
    await tally.settle(pg_dsn, before, committed=before)
    assert set(after) <= set(outbox_ids(path))
