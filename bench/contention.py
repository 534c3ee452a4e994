"""Several processes appending to one outbox file at once (bot shards).

SQLite lets one writer commit at a time; an append that finds the write lock taken waits for it
(``outbox.append._retry_busy``: yields, then short sleeps). Each contender times its own
appends; the figures show what one shard's commands pay when others append beside it, flat out
(the worst case) and paced like a busy shard.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from outbox import Outbox

from .core import ROOT, Chart, Context, Section, Table
from .timing import fmt_range, fmt_us, median

__all__ = ["run"]

READY_TIMEOUT_S = 60.0
RUN_TIMEOUT_S = 300.0
COUNTS = (1, 2, 4)
PACED_RATE = 2000.0


async def _one_run(ctx: Context, k: int, n: int, rate: float, name: str) -> list[dict[str, Any]]:
    """Run ``k`` contenders of ``n`` appends each on a fresh file; return their reports."""
    path = ctx.path(name)
    async with Outbox(path):
        pass  # lay the file out once, so the contenders do not race to create it
    procs = [
        await asyncio.create_subprocess_exec(
            ctx.python, "-m", "bench.procs.contender", str(path), str(n), str(rate),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=ctx.child_env(), cwd=ROOT,
        )
        for _ in range(k)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stderr is not None
            line = await asyncio.wait_for(p.stdout.readline(), READY_TIMEOUT_S)
            if line.strip() != b"ready":
                lines = (await p.stderr.read()).decode(errors="replace").strip().splitlines()
                raise RuntimeError(f"a contender did not start: {lines[-1] if lines else line!r}")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write(b"go\n")
        for p in procs:
            assert p.stdin is not None
            await p.stdin.drain()
        reports = []
        for p in procs:
            out, err = await asyncio.wait_for(p.communicate(), RUN_TIMEOUT_S)
            if p.returncode != 0:
                tail = err.decode(errors="replace").strip().splitlines()
                raise RuntimeError(f"a contender failed: {tail[-1] if tail else p.returncode}")
            reports.append(json.loads(out.strip().splitlines()[-1]))
        return reports
    finally:
        for p in procs:
            if p.returncode is None:
                p.kill()
                await p.communicate()


def _span(reports: list[dict[str, Any]]) -> float:
    return float(max(x["t_end"] for x in reports) - min(x["t_start"] for x in reports)) / 1e9


async def run(ctx: Context) -> Section:
    started = time.perf_counter()
    repeats = ctx.scale(3, 1)
    modes = (
        ("flat out", 0.0, ctx.scale(50_000, 5_000)),
        (f"{PACED_RATE:,.0f} appends/s each", PACED_RATE, ctx.scale(6_000, 1_000)),
    )
    runs: dict[tuple[str, int], list[list[dict[str, Any]]]] = {(m, k): [] for m, _, _ in modes for k in COUNTS}
    turn = 0
    for r in range(repeats):
        for mode, rate, n in modes:
            for i in range(len(COUNTS)):
                k = COUNTS[(i + turn) % len(COUNTS)]
                reports = await _one_run(ctx, k, n, rate, f"contention-{k}-{int(rate)}-{r}.db")
                runs[(mode, k)].append(reports)
                ctx.log(
                    f"  {mode}, {k} process(es), repeat {r + 1}: {k * n / _span(reports):,.0f} events/s, "
                    "p99 / max per process " + ", ".join(
                        f"{fmt_us(x['dist']['p99'])} / {fmt_us(x['dist']['max'])}" for x in reports
                    )
                )
        turn += 1

    rows = []
    used: dict[int, float] = {}
    for mode, rate, n in modes:
        for k in COUNTS:
            procs = [x for reports in runs[(mode, k)] for x in reports]
            rates = [sum(x["n"] for x in reports) / _span(reports) for reports in runs[(mode, k)]]
            cores = [sum(x["cpu_s"] for x in reports) / _span(reports) for reports in runs[(mode, k)]]
            p99s = [x["dist"]["p99"] for x in procs]
            if not rate:
                used[k] = median(cores)
            rows.append([
                mode,
                str(k),
                fmt_us(median([x["dist"]["p50"] for x in procs])),
                fmt_us(median(p99s)),
                fmt_range(p99s),
                fmt_us(median([x["dist"]["p99.9"] for x in procs])),
                fmt_us(max(x["dist"]["max"] for x in procs)),
                f"{median(rates):,.0f}",
                f"{median(cores):.2f}",
            ])
    flat_n, paced_n = modes[0][2], modes[1][2]
    section = Section(
        name="contention",
        title="Several processes appending to one file",
        intro=(
            "1, 2 and 4 processes append command events to one outbox file "
            "(`durability=\"process\"`), all starting together: flat out "
            f"({flat_n:,} events each), and paced at {PACED_RATE:,.0f} appends/s each "
            f"({paced_n:,} events each), a busy shard. {repeats} repeat(s), the process counts "
            "taking turns. Each process times its own appends (collector frozen); p50/p99/p99.9 "
            "are medians over every process of every repeat, the p99 spread is over those "
            "processes, and max is the single worst append anywhere. Aggregate events/s counts "
            "all processes' events over the span from the first start to the last finish; CPU "
            "cores used is their CPU seconds over that span. The machine has "
            f"{_cores()} cores, so 4 appenders also compete for CPU."
        ),
    )
    section.tables.append(Table(
        title="Append latency per process, and aggregate throughput",
        headers=["load", "processes", "p50", "p99", "p99 over processes", "p99.9", "max",
                 "aggregate events/s", "CPU cores used"],
        rows=rows,
        note="SQLite lets one writer commit at a time. An append that finds the write lock taken "
             "yields the CPU a few times, then sleeps from 20 us doubling up to 1 ms between tries "
             "(SQLite's own busy handler would sleep 1 ms at least, and let one process starve "
             "for up to a second under flat-out contention). Flat out, collisions are frequent "
             "and reach p99 once there are more appenders than free cores; paced, they stay in "
             "the far tail. Flat out, the processes got "
             f"{used[COUNTS[0]]:.2f}, {used[COUNTS[1]]:.2f} and {used[COUNTS[2]]:.2f} CPU cores "
             "between them: the rest of their time went waiting for the lock or for a core.",
    ))
    keys = [(mode, k) for mode, _, _ in modes for k in COUNTS]
    section.charts.append(Chart(
        filename="bench-contention.png",
        title="Append latency per process, several processes on one outbox file",
        kind="bars",
        data={
            "unit": "us per append (log scale)",
            "categories": [f"{k} process{'es' if k > 1 else ''}, {mode}" for mode, k in keys],
            "series": [
                {"label": q,
                 "values": [median([x["dist"][q] for rs in runs[key] for x in rs]) for key in keys],
                 "low": [min(x["dist"][q] for rs in runs[key] for x in rs) for key in keys],
                 "high": [max(x["dist"][q] for rs in runs[key] for x in rs) for key in keys]}
                for q in ("p50", "p99", "p99.9")
            ],
            "log": True,
        },
    ))
    section.raw = {"runs": {f"{m}|{k}": v for (m, k), v in runs.items()}}
    section.seconds = time.perf_counter() - started
    return section


def _cores() -> int:
    return os.cpu_count() or 1
