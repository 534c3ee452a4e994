"""Kill -9 the operator's work half-way: ``outbox import``, ``outbox replay``, ``outbox prune``, a checkpoint.

After each kill the file is opened again and checked (sound, nothing doubled, nothing pending
lost); at the end the interrupted work is run to completion and Postgres is counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from outbox import Outbox, OutboxReader, uuid7
from shipper import Shipper
from torture_kit import (
    PROCS,
    SIZES,
    Tally,
    wait_for,
    cli,
    count_postgres,
    execute,
    file_grew,
    integrity,
    keyed,
    kill_when,
    outbox_ids,
    pick,
    popen_cli,
    sigkill,
)


def write_jsonl(path: Path, n: int, writer: str) -> list[str]:
    ids = []
    with open(path, "w", encoding="utf-8") as out:
        for i in range(n):
            event_id = uuid7()
            ids.append(event_id)
            record = {"id": event_id, "topic": "imported", "payload": keyed(writer, i, pad="i" * 60)}
            out.write(json.dumps(record) + "\n")
    return ids


@pytest.mark.parametrize("size", SIZES)
async def test_sigkill_during_outbox_import(
    size: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    """Each round imports a new file: even rounds are killed while rows move into the outbox,
    odd ones at a random moment (mostly while lines are read and staged); then it is rerun."""
    n, rounds = pick(size, 20_000, 50_000), pick(size, 6, 30)
    rng = random.Random(7101)
    path = tmp_path / "events.db"
    async with Outbox(path):
        pass
    lines: list[str] = []
    partial = 0
    for round_ in range(rounds):
        source = tmp_path / f"events-{round_}.jsonl"
        batch = write_jsonl(source, n, f"import{round_}")
        before = len(outbox_ids(path))
        moving = file_grew(Path(f"{path}-wal"))
        proc = popen_cli("outbox", "import", str(path), str(source), env=subprocess_env, workdir=tmp_path)
        if round_ % 2:
            await asyncio.sleep(rng.uniform(0.0, 0.5))
            tally.faults += sigkill(proc)
        else:
            tally.faults += await kill_when(proc, moving, rng, n / 1e6)
        assert integrity(path) == "ok"
        held = outbox_ids(path)
        assert len(held) == len(set(held)), "an interrupted import doubled an event"
        assert set(held) <= set(lines) | set(batch)
        partial += before < len(held) < before + n
        result = cli("outbox", "import", str(path), str(source), "--json", env=subprocess_env)
        assert result.code == 0, result.stderr
        summary = result.json()
        assert summary["added"] + summary["already_present"] == n and summary["skipped"] == []
        lines += batch
        assert sorted(outbox_ids(path)) == sorted(lines)
    assert tally.faults >= rounds // 2, "most kills should land while the import runs"
    drained = cli("shipper", "drain", "--outbox", str(path), "--dsn", pg_dsn, "--json", env=subprocess_env)
    assert drained.code == 0 and drained.json()["shipped"] == len(lines), drained.stderr
    tally.fault = "SIGKILLs of `outbox import`"
    tally.notes["kills_mid_move"] = partial
    await tally.settle(pg_dsn, lines)


def rows_growing(conn: asyncpg.Connection) -> Any:
    """An async predicate: has ``outbox_events`` gained rows since the last look?"""
    seen: list[int] = []

    async def growing() -> bool:
        rows = int(await conn.fetchval("SELECT count(*) FROM outbox_events"))
        grew = bool(seen) and rows > seen[-1]
        seen.append(rows)
        return grew

    return growing


@pytest.mark.parametrize("size", SIZES)
async def test_sigkill_during_outbox_replay(
    size: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    n, rounds = pick(size, 20_000, 100_000), pick(size, 5, 30)
    rng = random.Random(7102)
    path = tmp_path / "events.db"
    async with Outbox(path) as ob:
        acked = [await ob.append("t", keyed("replay", i)) for i in range(n)]
    async with Shipper(path, pg_dsn) as s:
        await s.drain(timeout=300)
    partial = 0
    for _ in range(rounds):
        # Postgres "restored from an older backup": two thirds of the rows are gone again
        await execute(pg_dsn, "DELETE FROM outbox_events WHERE (payload->>'i')::int % 3 <> 0")
        proc = popen_cli("outbox", "replay", str(path), "--dsn", pg_dsn, env=subprocess_env, workdir=tmp_path)
        conn = await asyncpg.connect(pg_dsn)
        try:
            tally.faults += await kill_when(proc, rows_growing(conn), rng, n / 400_000)
        finally:
            await conn.close()
        count = await count_postgres(pg_dsn)
        assert count.duplicated == 0 and count.ids <= set(acked)
        partial += count.rows < n
    assert partial >= rounds // 2, "most kills should land mid-replay"
    result = cli("outbox", "replay", str(path), "--dsn", pg_dsn, "--json", env=subprocess_env)
    assert result.code == 0 and result.json()["selected"] == n, result.stderr
    verified = cli("outbox", "verify", str(path), "--dsn", pg_dsn, "--json", env=subprocess_env)
    assert verified.code == 0 and verified.json()["ok"] and verified.json()["checked"] == n, verified.stdout
    tally.fault = "SIGKILLs of `outbox replay`"
    tally.notes["kills_mid_replay"] = partial
    await tally.settle(pg_dsn, acked)


@pytest.mark.parametrize("size", SIZES)
async def test_sigkill_during_outbox_prune(
    size: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    """Each round ships a new lot and leaves a few pending, then a prune of everything is killed."""
    n, rounds = pick(size, 30_000, 100_000), pick(size, 5, 30)
    rng = random.Random(7103)
    path = tmp_path / "events.db"
    acked: list[str] = []
    pending: list[str] = []
    partial = 0
    for round_ in range(rounds):
        async with Outbox(path) as ob:
            acked += [await ob.append("t", keyed(f"old{round_}", i, pad="o" * 60)) for i in range(n)]
        async with Shipper(path, pg_dsn) as s:
            await s.drain(timeout=300)  # last round's pending events ship now too
        acked += pending
        async with Outbox(path) as ob:  # appended after the shipper stopped: must survive any prune
            pending = [await ob.append("t", keyed(f"new{round_}", i)) for i in range(200)]
        before = outbox_ids(path)
        proc = popen_cli("outbox", "prune", str(path), "--older-than", "0s", env=subprocess_env, workdir=tmp_path)
        tally.faults += await kill_when(proc, file_grew(Path(f"{path}-wal")), rng, 0.04)
        assert integrity(path) == "ok"
        held = outbox_ids(path)
        assert set(pending) <= set(held), "prune deleted a pending event"
        kept = set(held)
        assert held == [i for i in before if i in kept], "prune reordered events"
        partial += len(pending) < len(held) < len(before)
        async with OutboxReader(path) as reader:
            status = await reader.status()
        assert status.pending == len(pending) and status.last_seq == len(acked) + len(pending)
        result = cli("outbox", "prune", str(path), "--older-than", "0s", env=subprocess_env)
        assert result.code == 0, result.stderr
        assert outbox_ids(path) == pending, "a finished prune leaves exactly the pending events"
    assert partial >= 1, "some kill should land mid-prune"
    async with Outbox(path) as ob:
        pending.append(await ob.append("t", keyed("later", 0)))
    async with OutboxReader(path) as reader:
        assert await reader.last_seq() == len(acked) + len(pending), "a seq was reused after pruning"
    async with Shipper(path, pg_dsn) as s:
        await s.drain(timeout=300)
    tally.fault = "SIGKILLs of `outbox prune`"
    tally.notes["kills_mid_prune"] = partial
    await tally.settle(pg_dsn, acked + pending)


@pytest.mark.parametrize("size", SIZES)
async def test_sigkill_during_a_wal_checkpoint(
    size: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally
) -> None:
    rounds, per_round = pick(size, 6, 40), pick(size, 20_000, 40_000)
    rng = random.Random(7104)
    path = tmp_path / "events.db"
    acked: list[str] = []
    unfinished = 0
    async with Outbox(path, checkpoint_every=10**9) as ob:  # the WAL only grows, until the checkpointer runs
        for round_ in range(rounds):
            acked += [await ob.append("t", keyed(f"r{round_}", i, pad="c" * 120)) for i in range(per_round)]
            ready = tmp_path / f"ckpt-ready-{round_}"
            with open(tmp_path / "ckpt.out", "ab") as out:
                proc = subprocess.Popen(
                    [sys.executable, str(PROCS / "torture_checkpoint.py"), str(path), str(ready)],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=subprocess_env,
                )  # fmt: skip
            wait_for(ready.exists, 60, "checkpointer ready", proc)
            await asyncio.sleep(rng.uniform(0.0, 0.08))
            tally.faults += sigkill(proc)
            unfinished += os.path.getsize(f"{path}-wal") > 0  # killed before the WAL was truncated
            assert integrity(path) == "ok"
            held = outbox_ids(path)
            assert held == acked, "the file lost or reordered events across a killed checkpoint"
    async with Outbox(path) as ob:
        acked.append(await ob.append("t", keyed("after", 0)))
    assert outbox_ids(path) == acked
    async with Shipper(path, pg_dsn) as s:
        await s.drain(timeout=300)
    tally.fault = "SIGKILLs of a WAL checkpoint"
    tally.notes["kills_before_the_checkpoint_finished"] = unfinished
    await tally.settle(pg_dsn, acked)
