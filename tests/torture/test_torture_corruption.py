"""A damaged outbox file: truncated, overwritten with garbage, emptied, its WAL deleted.

The damage must be *detected* with a clear error naming the file (never a raw SQLite
exception, never a silent fresh start that skips events), the damaged file must be *kept*
(``on_corrupt="quarantine"`` moves it aside, byte for byte), appends must *continue* in a fresh
file that ships normally, and reopening must not quarantine again (no crash loop) -- also when
several processes meet the damage at the same moment.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from outbox import Outbox, OutboxCorruptError, OutboxReader, ship_path
from shipper import Shipper
from torture_kit import SIZES, Tally, cli, keyed, outbox_ids, pick

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


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": truncate_half,
    "garbage": garbage_everywhere,
    "garbage_after_header": garbage_after_header,
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
