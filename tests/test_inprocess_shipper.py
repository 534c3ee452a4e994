"""The shipper in the bot's process: it finds the bot's outbox, gathers appends that keep coming
into batches, ships each event once, and never lingers past a drain, a stop or a full batch."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import asyncpg
import pytest

from outbox import Outbox
from outbox.append import find_open
from shipper import Shipper
from shipper.migrate import migrate
from shipper.wakeup import Wakeup


async def rows_in(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r[0] for r in await conn.fetch("SELECT id::text FROM outbox_events")]
    finally:
        await conn.close()


async def wait_for_rows(dsn: str, ids: list[str], seconds: float) -> list[str]:
    """Poll Postgres until every id is there (or ``seconds`` pass); return what is there."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while True:
        there = await rows_in(dsn)
        if set(ids) <= set(there) or loop.time() > deadline:
            return there
        await asyncio.sleep(0.05)


async def test_a_shipper_finds_the_open_outbox_of_its_file(outbox_path: Path, pg_dsn: str) -> None:
    """No ``outbox=`` given: with a 60 s poll interval, only the append's wake-up ships in time."""
    await migrate(pg_dsn)
    async with Outbox(outbox_path) as ob:
        same_file = outbox_path.parent / "." / outbox_path.name  # another spelling of the path
        async with Shipper(same_file, pg_dsn, flush_interval=60) as s:
            await ob.append("t", {"first": True})
            await s.drain(timeout=30)  # connected, one batch shipped ...
            await asyncio.sleep(0.5)  # ... and idle, for the next 60 s unless an append wakes it
            event_id = await ob.append("t", {"now": True})
            assert event_id in await wait_for_rows(pg_dsn, [event_id], 30), "the append did not wake the shipper"


async def test_appends_that_keep_coming_ship_in_shared_batches_exactly_once(outbox_path: Path, pg_dsn: str) -> None:
    """A steady stream (~1,000/s) is gathered into batches of several events; each arrives once,
    and without a drain or a poll (60 s) every one of them arrives: none is left lingering."""
    await migrate(pg_dsn)
    n = 1500
    async with Outbox(outbox_path) as ob:
        async with Shipper(outbox_path, pg_dsn, flush_interval=60) as s:
            await s.drain(timeout=30)
            first_batches = s.stats.batches
            appended = []
            for i in range(n):
                appended.append(await ob.append("t", {"i": i}))
                await asyncio.sleep(0.001)
            there = await wait_for_rows(pg_dsn, appended, 30)
            batches = s.stats.batches - first_batches
    assert sorted(there) == sorted(appended), f"{len(set(appended) - set(there))} missing, {len(there) - len(set(there))} doubled"
    assert batches * 2 <= n, f"{n} events in {batches} batches: appends that keep coming should share batches"


async def test_a_drain_does_not_wait_for_the_linger(outbox_path: Path, pg_dsn: str) -> None:
    """With a linger far longer than the test's timeout, a drain still returns: it asks for a look now."""
    await migrate(pg_dsn)
    async with Outbox(outbox_path) as ob:
        async with Shipper(outbox_path, pg_dsn, flush_interval=600) as s:
            s._wakeup.linger = 600.0  # appends that keep coming would wait ten minutes for company
            await s.drain(timeout=30)
            ids = [await ob.append("t", {"i": i}) for i in range(50)]
            async with asyncio.timeout(30):
                await s.drain()
            assert set(ids) <= set(await rows_in(pg_dsn))


async def test_a_linger_ends_on_a_kick_and_on_a_full_batch() -> None:
    wakeup = Wakeup(linger=600.0, full=10)
    wakeup.rate = 1000.0  # appends keep coming: a look would linger
    assert wakeup.lingering
    for _ in range(10):  # a batch's worth
        wakeup.notify()
    async with asyncio.timeout(30):
        await wakeup.wait(600)
    wakeup.rate = 1000.0
    wakeup.notify()
    asyncio.get_running_loop().call_later(0.01, wakeup.kick)
    async with asyncio.timeout(30):
        await wakeup.wait(600)


async def test_after_a_quiet_spell_an_append_is_looked_for_at_once() -> None:
    wakeup = Wakeup(linger=600.0, full=1000)
    assert not wakeup.lingering  # nothing appended yet: no rate
    wakeup.notify()
    async with asyncio.timeout(30):
        await wakeup.wait(600)


async def test_find_open_knows_only_open_outboxes_on_this_loop(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    assert find_open(path) is None
    async with Outbox(path) as ob:
        assert find_open(path) is ob
        assert find_open(tmp_path / "other.db") is None
        elsewhere: list[object] = []

        async def look() -> None:
            elsewhere.append(find_open(path))

        thread = threading.Thread(target=lambda: asyncio.run(look()))  # another loop, another thread
        thread.start()
        thread.join(30)
        assert elsewhere == [None], "an outbox's listeners run on its own loop only"
    assert find_open(path) is None


@pytest.mark.parametrize("order", ["outbox first", "shipper first"])
async def test_closing_in_either_order_loses_nothing(outbox_path: Path, pg_dsn: str, order: str) -> None:
    await migrate(pg_dsn)
    ob = await Outbox(outbox_path).open()
    s = Shipper(outbox_path, pg_dsn, flush_interval=0.05)
    await s.start()
    ids = [await ob.append("t", {"i": i}) for i in range(200)]
    if order == "outbox first":
        await ob.close()
        await s.stop()
    else:
        await s.stop()
        await ob.close()
    assert sorted(await rows_in(pg_dsn)) == sorted(ids)
