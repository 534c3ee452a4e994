"""A table dropped or altered under a running shipper: a clear error, every event kept (pending,
not dead-lettered), and shipping resumes once ``shipper migrate`` (or the operator) repairs it.

Rows the operator's own change destroyed (a dropped table takes its rows with it) are still in
the outbox until pruned; ``outbox replay`` sends them again and ``outbox verify`` proves it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import pytest

from outbox import Outbox, OutboxReader
from shipper import Shipper, migrate
from torture_kit import SIZES, Feed, Tally, cli, execute, pick


@dataclass(frozen=True)
class Alteration:
    """What an operator did to the table, what the error must name, and what repairs it."""

    name: str
    change: tuple[str, ...]
    names: str  # the error must contain this
    repair: tuple[str, ...] = ()  # the operator's own fix, when `shipper migrate` cannot know it


ALTERATIONS = [
    # statements name their tables with the schema: the error says relation "public.outbox_events"
    Alteration("table_dropped", ("DROP TABLE outbox_events",), 'outbox_events" does not exist'),
    Alteration("column_dropped", ("ALTER TABLE outbox_events DROP COLUMN payload",), 'column "payload"'),
    Alteration(
        "not_null_column_added",
        (
            "ALTER TABLE outbox_events ADD COLUMN tenant text NOT NULL DEFAULT 'x'",
            "ALTER TABLE outbox_events ALTER COLUMN tenant DROP DEFAULT",
        ),
        'column "tenant"',
        repair=("ALTER TABLE outbox_events DROP COLUMN tenant",),
    ),
]


async def wait_for_error(s: Shipper, needle: str, timeout: float = 30) -> str:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while needle not in (s.stats.last_error or ""):
        assert loop.time() < deadline, f"no error naming {needle!r}: {s.stats}"
        await asyncio.sleep(0.02)
    return s.stats.last_error or ""


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("alteration", ALTERATIONS, ids=lambda a: a.name)
async def test_table_changed_under_the_shipper(
    size: str, alteration: Alteration, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    cycles = pick(size, 1, 5)
    path = tmp_path / "events.db"
    await migrate(pg_dsn)
    async with Outbox(path) as ob, Shipper(path, pg_dsn, outbox=ob, backoff_cap=0.2) as s:
        async with Feed(ob, alteration.name) as feed:
            while s.stats.shipped == 0:  # connected and migrated: the change below comes after that
                await asyncio.wait_for(s.drain(), 60)
                await asyncio.sleep(0.01)
            for _ in range(cycles):
                await s.drain(timeout=60)
                await execute(pg_dsn, *alteration.change)
                tally.faults += 1
                error = await wait_for_error(s, alteration.names)
                shipped = s.stats.shipped
                await asyncio.sleep(0.3)  # events keep coming and must wait, not die
                async with OutboxReader(path) as reader:
                    status = await reader.status()
                assert status.dead == 0 and s.stats.dead == 0, f"events were dead-lettered: {error}"
                assert status.pending > 0 and s.stats.shipped == shipped
                assert "shipper migrate" in (status.last_error or ""), status.last_error
                if alteration.repair:
                    await execute(pg_dsn, *alteration.repair)
                migrated = cli("shipper", "migrate", "--dsn", pg_dsn, env=subprocess_env)
                assert migrated.code == 0, migrated.stderr
                await s.drain(timeout=60)
                assert s.stats.shipped > shipped, "shipping should resume after the repair"
        await s.drain(timeout=60)
    # what the operator's change destroyed is still in the outbox: send it again, and prove it
    replayed = cli("outbox", "replay", str(path), "--dsn", pg_dsn, env=subprocess_env)
    assert replayed.code == 0, replayed.stderr
    verified = cli("outbox", "verify", str(path), "--dsn", pg_dsn, "--json", env=subprocess_env)
    assert verified.code == 0 and verified.json()["ok"], verified.stdout
    tally.fault = f"{alteration.name.replace('_', ' ')} under a running shipper"
    await tally.settle(pg_dsn, feed.acked)
