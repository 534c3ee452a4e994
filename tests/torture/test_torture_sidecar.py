"""Kill -9 the sidecar shipper mid-batch, and mid-retention-pass, many times, while events flow in.

After every kill the books must balance at once: each acknowledged event is in Postgres, still
pending in the outbox, or a dead letter the scenario planted -- never two of those, never none.
Poison rows (refused by a CHECK constraint in Postgres, or unfit for ``command_calls``) keep
the careful path and its savepoint bisection busy while the kills land.
"""

from __future__ import annotations

import asyncio
import random
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from outbox import Outbox, OutboxReader
from shipper import Shipper, migrate
from torture_kit import (
    PROCS,
    SIZES,
    ShipperRun,
    Tally,
    wait_for,
    count_postgres,
    dead_ids,
    execute,
    integrity,
    keyed,
    pick,
    sigkill,
)


async def pending_ids(path: Path) -> set[str]:
    async with OutboxReader(path) as reader:
        return {e.id for e in await reader.read_pending(10**9)}


async def balance(path: Path, dsn: str, acknowledged: set[str]) -> tuple[int, int]:
    """Assert every acknowledged event is somewhere, and no dead letter shipped; return (pending, in Postgres).

    Pending and shipped may overlap: a kill between Postgres's commit and the local cursor's
    advance leaves a batch that is in Postgres (and its ledger) but not yet marked locally.
    """
    assert integrity(path) == "ok"
    pending = await pending_ids(path)
    shipped = (await count_postgres(dsn)).ids
    dead = dead_ids(path)
    assert not (pending & dead) and not (shipped & dead)
    nowhere = acknowledged - pending - shipped - dead
    assert not nowhere, f"{len(nowhere)} acknowledged events are neither pending, shipped nor dead"
    return len(pending), len(shipped)


async def append_for(ob: Outbox, writer: str, start: int, n: int, poison_every: int, acked: set[str], poison: set[str]) -> None:
    """Append ``n`` events, yielding to the loop now and then; every ``poison_every``-th is refused."""
    for i in range(start, start + n):
        if i % poison_every == poison_every - 1:
            if i % 2:
                event_id = await ob.append("t", keyed(writer, i, poison=True))  # refused by the CHECK
            else:
                event_id = await ob.append("command_calls", {"command": "queue"})  # no discord_uid
            poison.add(event_id)
        else:
            event_id = await ob.append("t", keyed(writer, i, pad="p" * 80))
        acked.add(event_id)
        if i % 200 == 0:
            await asyncio.sleep(0.002)


@pytest.mark.parametrize("size", SIZES)
async def test_sigkill_of_shipper_run_mid_batch(
    size: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    rounds = pick(size, 10, 60)
    rng = random.Random(7001)
    path = tmp_path / "events.db"
    await migrate(pg_dsn)
    await execute(pg_dsn, "ALTER TABLE outbox_events ADD CONSTRAINT torture_poison CHECK (NOT payload ? 'poison')")
    acked: set[str] = set()
    poison: set[str] = set()
    with_backlog = 0
    async with Outbox(path) as ob:
        await append_for(ob, "backlog", 0, 5000, 97, acked, poison)
        for round_ in range(rounds):
            run = ShipperRun(
                path, pg_dsn, tmp_path, subprocess_env,
                "--batch-size", str(rng.choice([10, 100, 1000])), "--flush-interval", "0.01", tag=str(round_),
            )  # fmt: skip
            try:
                run.wait_shipping()
                feeding = asyncio.ensure_future(append_for(ob, f"r{round_}", 0, rng.randint(200, 3000), 97, acked, poison))
                await asyncio.sleep(rng.uniform(0.0, 0.25))
            finally:
                run.kill()
            await feeding
            assert run.proc.returncode == -9, run.output()
            pending, _ = await balance(path, pg_dsn, acked)
            with_backlog += pending > 0
    # a guard on the scenario itself (kills must land mid-stream), not on the outcome: the shipper
    # got faster, so it asks for a quarter of the kills rather than most
    assert with_backlog >= rounds // 4, "too few kills landed while events were still pending"
    async with Shipper(path, pg_dsn, backoff_cap=0.5) as s:
        await s.drain(timeout=300)
    tally.faults, tally.fault = rounds, "SIGKILLs of `shipper run` mid-stream"
    tally.notes["kills_with_backlog"] = with_backlog
    await tally.settle(pg_dsn, acked, dead=dead_ids(path), expected_dead=len(poison))
    assert dead_ids(path) == poison


class Sidecar:
    """``tests/procs/torture_sidecar.py``: a Shipper whose retention pass runs after every batch."""

    def __init__(self, path: Path, dsn: str, workdir: Path, env: Mapping[str, str], tag: str, batch_size: int) -> None:
        self.ready = workdir / f"sidecar-ready-{tag}"
        self.log = workdir / f"sidecar-{tag}.log"
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, str(PROCS / "torture_sidecar.py"), str(path), dsn, str(self.ready),
                 "--batch-size", str(batch_size), "--retention", "0", "--housekeeping", "0"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=dict(env),
            )  # fmt: skip

    def wait_ready(self) -> None:
        wait_for(self.ready.exists, 60, "sidecar ready", self.proc)


@pytest.mark.parametrize("size", SIZES)
async def test_sigkill_during_the_retention_pass(
    size: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    """Retention 0 and housekeeping after every batch: prune, checkpoint and ledger trim run all the time."""
    rounds = pick(size, 8, 50)
    rng = random.Random(7002)
    path = tmp_path / "events.db"
    acked: set[str] = set()
    poison: set[str] = set()
    landed = 0
    async with Outbox(path) as ob:
        for round_ in range(rounds):
            await append_for(ob, f"r{round_}", 0, rng.randint(2000, 8000), 10**9, acked, poison)
            sidecar = Sidecar(path, pg_dsn, tmp_path, subprocess_env, str(round_), rng.choice([200, 1000]))
            try:
                sidecar.wait_ready()
                await asyncio.sleep(rng.uniform(0.0, 0.3))
            finally:
                landed += sigkill(sidecar.proc)
            await balance(path, pg_dsn, acked)
    async with Shipper(path, pg_dsn, retention_s=0, housekeeping_interval=0, backoff_cap=0.5) as s:
        await s.drain(timeout=300)
    async with OutboxReader(path) as reader:
        status = await reader.status()
    assert status.pending == 0 and status.cursor == status.last_seq
    tally.faults, tally.fault = landed, "SIGKILLs of a sidecar pruning after every batch"
    tally.notes["events_left_in_file_after_pruning"] = status.shipped
    await tally.settle(pg_dsn, acked)
