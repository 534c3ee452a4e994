"""What a ``kill -9`` loses: fire-and-forget INSERTs against the outbox.

A child process records command events and prints the number of each one as soon as the call
that recorded it returns (the moment a bot would answer the user). The parent kills it with
SIGKILL mid-stream, then counts which acknowledged events actually exist: rows in Postgres for
``create_task(pool.execute(INSERT))``, rows in the outbox file for ``Outbox.append``.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from .core import ROOT, Context, Section, Table
from .timing import median

__all__ = ["run"]

TABLE = "CREATE TABLE IF NOT EXISTS loss_events (i integer PRIMARY KEY, payload jsonb NOT NULL)"
READY_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 120.0


@dataclass(frozen=True, kw_only=True)
class Scenario:
    key: str
    method: str
    load: str
    mode: str
    rate: float  # events/s; 0: as fast as the loop allows
    kill_after: int
    delay: float = 0.0  # seconds each INSERT is held in the server (a distant Postgres)


@dataclass(frozen=True, kw_only=True)
class Trial:
    scenario: str
    acked: int
    present: int
    lost: int
    unacked_present: int


def _scenarios(ctx: Context) -> list[Scenario]:
    burst, paced = ctx.scale(5000, 1000), ctx.scale(1500, 500)
    fire = "`create_task(pool.execute(INSERT))`"
    ours = "**`await Outbox.append`**"
    return [
        Scenario(key="ct-burst", method=fire, load="as fast as the loop allows", mode="create_task", rate=0, kill_after=burst),
        Scenario(key="ct-paced", method=fire, load="500 commands/s", mode="create_task", rate=500, kill_after=paced),
        Scenario(key="ct-far-40", method=fire, load="40 commands/s, Postgres 200 ms away", mode="create_task",
                 rate=40, kill_after=ctx.scale(120, 80), delay=0.2),
        Scenario(key="ct-far-100", method=fire, load="100 commands/s, Postgres 200 ms away", mode="create_task",
                 rate=100, kill_after=ctx.scale(300, 200), delay=0.2),
        Scenario(key="ob-burst", method=ours, load="as fast as the loop allows", mode="outbox", rate=0, kill_after=burst),
        Scenario(key="ob-paced", method=ours, load="500 commands/s", mode="outbox", rate=500, kill_after=paced),
    ]


async def _victim(ctx: Context, sc: Scenario, target: str) -> set[int]:
    """Start the victim, kill it with SIGKILL once enough events are acked; return the acks."""
    mode = sc.mode
    proc = await asyncio.create_subprocess_exec(
        ctx.python, "-m", "bench.procs.firehose", mode, target, str(sc.rate), str(sc.delay),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=ctx.child_env(), cwd=ROOT,
    )
    assert proc.stdout is not None and proc.stderr is not None
    acked: set[int] = set()
    killed = False
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
        if line != b"ready\n":
            err = (await proc.stderr.read()).decode(errors="replace").strip().splitlines()
            raise RuntimeError(f"the {mode} victim did not start: {err[-1] if err else line!r}")
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while len(acked) < sc.kill_after:
            line = await asyncio.wait_for(proc.stdout.readline(), max(0.1, deadline - time.monotonic()))
            if not line:
                raise RuntimeError(f"the {mode} victim exited before it was killed")
            acked.add(int(line))
        proc.kill()  # SIGKILL; through asyncio, whose child watcher must be the one to reap it
        killed = True
        rest = await asyncio.wait_for(proc.stdout.read(), 30)  # acks already in the pipe count too
        acked.update(int(x) for x in rest.split())
    finally:
        if not killed and proc.returncode is None:
            try:
                proc.kill()
            except ProcessLookupError:
                pass
        await proc.wait()
        await proc.stderr.read()
    return acked


async def _trial_pg(ctx: Context, dsn: str, sc: Scenario) -> Trial:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(TABLE)
        await conn.execute("TRUNCATE loss_events")
        acked = await _victim(ctx, sc, dsn)
        await asyncio.sleep(0.5 + sc.delay)  # let statements that reached the server finish
        present = {r[0] for r in await conn.fetch("SELECT i FROM loss_events")}
    finally:
        await conn.close()
    return Trial(scenario=sc.key, acked=len(acked), present=len(present),
                 lost=len(acked - present), unacked_present=len(present - acked))


async def _trial_outbox(ctx: Context, path: Path, sc: Scenario) -> Trial:
    acked = await _victim(ctx, sc, str(path))
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        present = {json.loads(p)["i"] for (p,) in conn.execute("SELECT payload FROM events").fetchall()}
    finally:
        conn.close()
    return Trial(scenario=sc.key, acked=len(acked), present=len(present),
                 lost=len(acked - present), unacked_present=len(present - acked))


async def run(ctx: Context) -> Section:
    started = time.perf_counter()
    repeats = ctx.scale(3, 1)
    scenarios = _scenarios(ctx)
    dsn = await ctx.postgres.create_database("bench_loss")
    trials: list[Trial] = []
    try:
        for r in range(repeats):
            for sc in scenarios:
                if sc.mode == "create_task":
                    trial = await _trial_pg(ctx, dsn, sc)
                else:
                    trial = await _trial_outbox(ctx, ctx.path(f"loss-{sc.key}-{r}.db"), sc)
                trials.append(trial)
                ctx.log(f"  {sc.key:9s}: acked {trial.acked}, present {trial.present}, lost {trial.lost}")
    finally:
        await ctx.postgres.drop_database(dsn)

    rows = []
    for sc in scenarios:
        ts = [t for t in trials if t.scenario == sc.key]
        rows.append([
            sc.method,
            sc.load,
            " / ".join(str(t.acked) for t in ts),
            " / ".join(str(t.lost) for t in ts),
            f"{median([100 * t.lost / t.acked for t in ts]):.1f}%",
        ])
    section = Section(
        name="loss",
        title="Events lost to kill -9: create_task vs the outbox",
        intro=(
            "A child process records command events and prints each one's number as soon as the "
            "call recording it returns, which is when a bot answers the user. It is killed with "
            "SIGKILL mid-stream, and every acknowledged event is looked for afterwards: in Postgres "
            f"for fire-and-forget INSERTs ({ctx.postgres.description}, pool of 10), in the outbox "
            f"file for `Outbox.append`. {repeats} run(s) of each; counts are listed run by run. "
            "The distant Postgres is simulated by holding each INSERT 200 ms in the server "
            "(`pg_sleep(0.2)` inside the statement)."
        ),
    )
    section.tables.append(Table(
        title="Acknowledged events missing after kill -9",
        headers=["method", "load", "acknowledged (per run)", "lost (per run)", "lost, median"],
        rows=rows,
    ))
    section.notes.append(
        "What fire-and-forget loses is its backlog: INSERTs already written to a socket still "
        "reach Postgres and commit after the process dies, but tasks still waiting for one of the "
        "pool's connections vanish. The backlog is near zero while commands arrive slower than "
        "the pool drains them (pool size / INSERT latency: thousands per second on loopback, 50 "
        "per second with 10 connections and Postgres 200 ms away, as the original bot's was) and "
        "grows without bound above that -- and whenever Postgres is slow or down."
    )
    section.raw = {"trials": [vars(t) for t in trials], "scenarios": [vars(sc) for sc in scenarios]}
    section.seconds = time.perf_counter() - started
    return section
