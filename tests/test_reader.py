"""The read side: batches in order, the cursor, dead letters, status, pruning and import."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from outbox import Outbox, OutboxReader, PayloadError
from outbox.maintenance import event_record, import_records, prune


async def fill(path: Path, n: int, topic: str = "t") -> list[str]:
    async with Outbox(path) as ob:
        return [await ob.append(topic, {"i": i}) for i in range(n)]


async def test_batches_come_in_order_and_the_cursor_only_moves_forward(outbox_path: Path) -> None:
    ids = await fill(outbox_path, 25)
    async with OutboxReader(outbox_path) as reader:
        first = await reader.read_pending(10)
        assert [e.id for e in first] == ids[:10]
        await reader.advance(first[-1].seq)
        await reader.advance(3)  # never moves back
        assert await reader.cursor() == first[-1].seq
        rest = await reader.read_pending(100)
        assert [e.id for e in rest] == ids[10:]
        status = await reader.status()
        assert (status.pending, status.shipped, status.dead) == (15, 10, 0)
        assert status.oldest_pending_age_s is not None and status.bytes > 0


async def test_dead_letters_are_set_aside_retried_and_dropped(outbox_path: Path) -> None:
    ids = await fill(outbox_path, 6)
    async with OutboxReader(outbox_path) as reader:
        batch = await reader.read_pending(10)
        await reader.set_aside([(batch[1], "invalid input syntax"), (batch[4], "check constraint")])
        assert [e.id for e in await reader.read_pending(10)] == [ids[0], ids[2], ids[3], ids[5]]
        await reader.advance(batch[-1].seq)
        status = await reader.status(per_topic=True)
        assert (status.pending, status.shipped, status.dead) == (0, 4, 2)
        assert status.topics[0].dead == 2
        dead = await reader.dead_letters()
        assert [(d.id, d.error, d.status) for d in dead] == [
            (ids[1], "invalid input syntax", "dead"),
            (ids[4], "check constraint", "dead"),
        ]
        assert await reader.retry_dead(ids=[ids[1]]) == 1
        assert [e.id for e in await reader.read_retries(10)] == [ids[1]]
        await reader.resolve([batch[1].seq])
        assert await reader.drop_dead(topic="t") == 1
        status = await reader.status()
        assert (status.pending, status.shipped, status.dead) == (0, 5, 0)


async def test_dropping_the_newest_event_keeps_a_tombstone(outbox_path: Path) -> None:
    """The highest seq is never deleted, or SQLite would hand it out again to a new event."""
    await fill(outbox_path, 3)
    async with OutboxReader(outbox_path) as reader:
        batch = await reader.read_pending(10)
        await reader.set_aside([(batch[2], "bad")])
        await reader.advance(batch[2].seq)
        assert await reader.drop_dead() == 1
        assert await reader.last_seq() == batch[2].seq
    new = await fill(outbox_path, 1)
    async with OutboxReader(outbox_path) as reader:
        pending = await reader.read_pending(10)
        assert [e.id for e in pending] == new and pending[0].seq > batch[2].seq
        status = await reader.status()
        assert (status.pending, status.shipped, status.dead) == (1, 2, 0)


async def test_prune_deletes_old_shipped_events_only(outbox_path: Path) -> None:
    await fill(outbox_path, 1200)
    async with OutboxReader(outbox_path) as reader:
        batch = await reader.read_pending(1000)
        await reader.set_aside([(batch[0], "bad")])
        await reader.advance(batch[-1].seq)
        deleted = await prune(reader, older_than_us=2**62)
        assert deleted == 999  # shipped ones, minus the dead letter
        status = await reader.status()
        assert (status.pending, status.shipped, status.dead) == (200, 0, 1)
        assert await prune(reader, older_than_us=0) == 0


async def test_prune_never_deletes_the_newest_event(outbox_path: Path) -> None:
    await fill(outbox_path, 5)
    async with OutboxReader(outbox_path) as reader:
        await reader.advance(await reader.last_seq())
        assert await prune(reader, older_than_us=2**62) == 4
        assert await reader.last_seq() == 5


async def lines_of(records: list[str]) -> AsyncIterator[tuple[int, str]]:
    for number, line in enumerate(records, 1):
        yield number, line


async def test_export_import_round_trip_keeps_ids_and_adds_nothing_twice(tmp_path: Path) -> None:
    source, target = tmp_path / "a.db", tmp_path / "b.db"
    ids = await fill(source, 50)
    async with OutboxReader(source) as reader:
        lines = [json.dumps(event_record(e)) async for chunk in reader.iter_events(chunk=7) for e in chunk]
    await fill(target, 2, topic="already-here")
    async with OutboxReader(target) as reader:
        first = await import_records(reader, lines_of(lines), chunk=16)
        second = await import_records(reader, lines_of(lines))
        assert (first.added, first.already_present) == (50, 0)
        assert (second.added, second.already_present) == (0, 50)
        imported = [e async for chunk in reader.iter_events(topic="t") for e in chunk]
    assert [e.id for e in imported] == ids
    assert [json.loads(e.payload) for e in imported] == [{"i": i} for i in range(50)]


async def test_a_bad_line_imports_nothing_unless_skipped(outbox_path: Path) -> None:
    good = json.dumps({"id": "01a22478-f56c-7fe2-b277-fc26d358bcca", "topic": "t", "payload": {"a": 1}})
    bad = json.dumps({"id": "01a22478-f56c-7fe2-b277-fc26d358bccb", "topic": "t", "payload": {"a": "\u0000"}})
    async with OutboxReader(outbox_path, create=True) as reader:
        with pytest.raises(PayloadError, match=r"line 2: string at \$.a holds a NUL"):
            await import_records(reader, lines_of([good, bad, good]))
        assert (await reader.status()).pending == 0
        result = await import_records(reader, lines_of([good, bad, "{not json", good]), skip_bad=True)
        assert result.added == 1 and result.already_present == 1
        assert result.skipped is not None and [n for n, _ in result.skipped] == [2, 3]



async def test_a_passive_checkpoint_that_sqlite_puts_off_is_not_an_error(outbox_path: Path) -> None:
    """The shipper's housekeeping checkpoints about once a second. Seen in drains: SQLite
    answered "database table is locked" (a read still open on the connection), the checkpoint
    raised, and the shipper failed its loop, dropped Postgres and backed off. A passive
    checkpoint is a chance taken: put off, it says so and the next one does the work."""
    from outbox.maintenance import checkpoint

    await fill(outbox_path, 50)
    async with OutboxReader(outbox_path) as reader:
        await reader.advance(10)
        open_read = await reader.db.execute("SELECT seq FROM events")
        assert await open_read.fetchone() is not None  # a read in progress on the same connection
        assert await checkpoint(reader) is False
        await open_read.close()
        assert await checkpoint(reader) is True
        assert await checkpoint(reader) is True  # back to back: nothing left open by the first


async def test_the_cursor_is_noted_without_a_sync_and_dead_letters_with_one(outbox_path: Path) -> None:
    """An attached side file syncs FULL unless told otherwise: an fsync of its WAL at each of
    the ten cursor notes a second. The cursor needs none (Postgres's ledger has it again after
    a power loss); a dead letter, which nothing else records, still gets its sync."""
    await fill(outbox_path, 3)
    async with OutboxReader(outbox_path) as reader:
        await reader.advance(1)  # the first write makes the side file
        statements: list[str] = []
        await reader.db.set_trace_callback(statements.append)
        await reader.advance(2)
        assert not [s for s in statements if "synchronous" in s]
        assert (await (await reader.db.execute("PRAGMA ship.synchronous")).fetchone()) == (1,)  # NORMAL
        event = (await reader.read_pending(1))[0]
        statements.clear()
        await reader.set_aside([(event, "refused")])
        syncs = [s for s in statements if "synchronous" in s or s.startswith("INSERT INTO ship.dead")]
        assert syncs == ["PRAGMA ship.synchronous = FULL", syncs[1], "PRAGMA ship.synchronous = NORMAL"]
        assert syncs[1].startswith("INSERT INTO ship.dead")


class FakeClock:
    """``outbox.shipclock.now`` under a test's control: wall and boot clocks, and the boot id."""

    def __init__(self) -> None:
        self.wall, self.boot, self.boot_us = 1_700_000_000_000_000, "boot-a", 5_000_000

    def now(self) -> tuple[int, str, int]:
        return self.wall, self.boot, self.boot_us

    def later(self, seconds: float, *, reboot: str | None = None) -> None:
        self.wall += int(seconds * 1e6)
        self.boot_us = int(seconds * 1e6) if reboot else self.boot_us + int(seconds * 1e6)
        self.boot = reboot or self.boot


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    import outbox.shipclock as shipclock

    fake = FakeClock()
    monkeypatch.setattr(shipclock, "now", fake.now)
    return fake


async def _marks(reader: OutboxReader) -> list[tuple[int, ...]]:
    return [tuple(r) for r in await reader.db.execute_fetchall("SELECT * FROM ship.shipped_at ORDER BY cursor")]


async def test_marks_keep_their_age_while_shipping_never_stops(outbox_path: Path, clock: FakeClock) -> None:
    """A bot that ships every 100 ms for three minutes: retention must still find events that
    shipped more than a minute ago. (The latest mark moved up while *it* was under a minute old,
    and moving made it new: one mark, always fresh, and an age-based prune deleted nothing.)"""
    await fill(outbox_path, 1801)
    async with OutboxReader(outbox_path) as reader:
        for seq in range(1, 1801):
            clock.later(0.1)
            await reader.advance(seq)
        assert 3 <= len(await _marks(reader)) <= 6  # about one a minute
        now_us = time.time_ns() // 1000
        deleted = await prune(reader, older_than_us=now_us - 60_000_000)  # shipped a minute ago or more
        assert 600 <= deleted <= 1200, deleted  # by a minute's granularity: all up to 1,200 at most
        # marks below the one that prune went by are of pruned events: gone, so a year of
        # shipping does not leave half a million rows to scan at every prune
        kept = await _marks(reader)
        assert kept[0][0] == deleted and len(kept) <= 3
        assert await prune(reader, older_than_us=now_us - 60_000_000) == 0
        assert await prune(reader, older_than_us=now_us - 600_000_000) == 0  # an older cut: nothing more


async def test_a_new_mark_starts_a_minute_after_the_one_before_it(outbox_path: Path, clock: FakeClock) -> None:
    """Marks: the latest moves up while the one before it is under a minute old, else a new
    one starts; a new boot starts its own; a cursor that did not move makes none; the cursor
    never moves back; a failed statement leaves no transaction open."""
    await fill(outbox_path, 30)
    async with OutboxReader(outbox_path) as reader:
        await reader.advance(5)  # the side file starts with a mark at its cursor (0); then this one
        clock.later(30)
        await reader.advance(9)  # the one before the latest (0) is 30 s old: the latest moves up
        clock.later(10)
        await reader.advance(10)  # 40 s: again
        assert await _marks(reader) == [(0, clock.wall - 40_000_000, "boot-a", clock.boot_us - 40_000_000),
                                        (10, clock.wall, "boot-a", clock.boot_us)]
        clock.later(21)
        await reader.advance(12)  # the one before it is 61 s old: a new one
        clock.later(1)
        await reader.advance(12)  # nothing shipped since: nothing moves, nothing starts
        clock.later(1, reboot="boot-b")
        await reader.advance(20)  # another boot: its own marks
        await reader.advance(3)  # never back
        assert [m[0] for m in await _marks(reader)] == [0, 10, 12, 20]
        assert (await _marks(reader))[-1] == (20, clock.wall, "boot-b", clock.boot_us)
        with pytest.raises(Exception):
            await reader.db.execute_fetchall("SELECT 1 FROM ship.nothing_here")
        await reader.advance(25)
        assert await reader.cursor() == 25
