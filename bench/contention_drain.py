"""Appending while a sidecar drains a backlog from the same file.

The bot appends at a steady rate (:mod:`bench.procs.pacer`); in one phase nothing else touches
the file, in the other a sidecar shipper (:mod:`bench.procs.sidecar`) starts against a backlog of
pending events and drains it: reading batches from the events file, writing its progress to the
side file, checkpointing, while it and Postgres take the machine's two cores. Only the appends
made while the drain ran are compared with the idle phase's.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from .backlog import PLAIN_TOPIC, fill, prepare_database, reset_database, rewind
from .children import Child
from .core import Chart, Check, Context, Section, Table
from .timing import distribution, fmt_range, fmt_ratio, fmt_us, median, percentile

__all__ = ["run"]

RATE = 2_000
TARGET = 2.0  # issue 6: append p99 while draining <= 2x idle p99


def _summary(took: list[int]) -> dict[str, float]:
    ordered = sorted(took)
    return {
        "n": float(len(ordered)),
        "p50": percentile(ordered, 50) / 1000,
        "p99": percentile(ordered, 99) / 1000,
        "p99.9": percentile(ordered, 99.9) / 1000,
        "max": (ordered[-1] / 1000) if ordered else float("nan"),
    }


async def _idle(ctx: Context, path: Path, seconds: float) -> list[int]:
    pacer = await Child.start(ctx, "pacer", str(path), str(RATE), str(seconds), "--samples", "--no-wait")
    try:
        await pacer.go()
        rep = await pacer.result(timeout=seconds + 60)
    finally:
        await pacer.kill()
    skip = rep["t_start"] + 500_000_000  # leave out the first half second, as in the drain phase
    return [d for s, d in zip(rep["starts"], rep["took"]) if s >= skip]


async def _drain(ctx: Context, path: Path, dsn: str, backlog: int, seconds: float) -> tuple[list[int], dict[str, Any]]:
    await rewind(path, pending=backlog)
    await reset_database(dsn)
    pacer = await Child.start(ctx, "pacer", str(path), str(RATE), str(seconds), "--samples", "--no-wait")
    side: Child | None = None
    try:
        await pacer.go()
        await asyncio.sleep(0.5)
        side = await Child.start(ctx, "sidecar", str(path), dsn, "--until", str(backlog))
        shipped = await side.result(timeout=120)
        rep = await pacer.result(timeout=seconds + 60)
    finally:
        await pacer.kill()
        if side is not None:
            await side.kill()
    lo, hi = shipped["t_start"], shipped["t_done"]
    window = [d for s, d in zip(rep["starts"], rep["took"]) if lo <= s <= hi]
    info = {"drain_s": (hi - lo) / 1e9, "truncated": hi > rep["t_end"], "shipped": shipped["shipped"]}
    return window, info


DIAGNOSTICS = {
    "idle": "nothing else",
    "read": "a process reading the same outbox file in a loop (no Postgres)",
    "copy": "a process COPYing rows into Postgres in a loop (no SQLite)",
    "burn": "two processes spinning the CPU (no I/O)",
}


async def _diagnostic(ctx: Context, path: Path, dsn: str, kind: str, seconds: float) -> list[int]:
    """Append for ``seconds`` beside one ingredient of a drain; keep appends after the first 0.5 s."""
    pacer = await Child.start(ctx, "pacer", str(path), str(RATE), str(seconds), "--samples", "--no-wait")
    others: list[Child] = []
    try:
        span = str(seconds + 0.5)
        if kind == "read":
            others.append(await Child.start(ctx, "disturb", "read", span, str(path)))
        elif kind == "copy":
            others.append(await Child.start(ctx, "disturb", "copy", span, dsn))
        elif kind == "burn":
            others += [await Child.start(ctx, "disturb", "burn", span) for _ in range(2)]
        for o in others:
            await o.go()
        await pacer.go()
        rep = await pacer.result(timeout=seconds + 60)
        for o in others:
            await o.result(timeout=60)
    finally:
        await pacer.kill()
        for o in others:
            await o.kill()
    skip = rep["t_start"] + 500_000_000
    return [d for s, d in zip(rep["starts"], rep["took"]) if s >= skip]


async def run(ctx: Context) -> Section:
    started = time.perf_counter()
    backlog = ctx.scale(100_000, 20_000)
    repeats = ctx.scale(8, 2)
    seconds = 4.0
    path = ctx.path("contention-drain.db")
    await fill(path, backlog, PLAIN_TOPIC)
    dsn = await ctx.postgres.create_database("bench_cdrain")
    idle: list[list[int]] = []
    drain: list[list[int]] = []
    infos: list[dict[str, Any]] = []
    diag_repeats = ctx.scale(3, 1)
    diag: dict[str, list[list[int]]] = {k: [] for k in DIAGNOSTICS}
    try:
        await prepare_database(dsn)
        for r in range(repeats):
            for phase in (("idle", "drain") if r % 2 == 0 else ("drain", "idle")):
                if phase == "idle":
                    idle.append(await _idle(ctx, path, seconds))
                else:
                    window, info = await _drain(ctx, path, dsn, backlog, seconds)
                    drain.append(window)
                    infos.append(info)
            i, d = _summary(idle[-1]), _summary(drain[-1])
            ctx.log(f"  repeat {r + 1}/{repeats}: idle p99 {fmt_us(i['p99'])}, while draining p99 {fmt_us(d['p99'])} "
                    f"({int(d['n'])} appends in {infos[-1]['drain_s']:.2f} s of drain)")
        kinds = list(DIAGNOSTICS)
        for r in range(diag_repeats):
            for kind in kinds[r % len(kinds):] + kinds[: r % len(kinds)]:
                await reset_database(dsn)
                diag[kind].append(await _diagnostic(ctx, path, dsn, kind, seconds))
            ctx.log("  diagnostics: " + ", ".join(f"{k} p99 {fmt_us(_summary(v[-1])['p99'])}" for k, v in diag.items()))
    finally:
        await ctx.postgres.drop_database(dsn)

    si, sd = [_summary(x) for x in idle], [_summary(x) for x in drain]
    ratios = [d["p99"] / i["p99"] for i, d in zip(si, sd)]
    pooled_i, pooled_d = _summary([x for xs in idle for x in xs]), _summary([x for xs in drain for x in xs])
    section = Section(
        name="contention_drain",
        title="Appending while a sidecar drains a backlog",
        intro=(
            f"A bot process appends command events at {RATE:,}/s (`durability=\"process\"`). Idle phase: "
            f"nothing else touches the file for {seconds:g} s. Drain phase: half a second in, a sidecar "
            f"shipper (`Shipper(path, dsn)`, defaults) starts against {backlog:,} pending events in the "
            "same file and drains them into Postgres; only the appends started between the sidecar's "
            "`start()` and the moment its counter reached the backlog are kept. Idle keeps every append "
            f"after the first half second. {repeats} repeats, the phases alternating (ABBA). Append "
            "latencies are timed in the appending process with the collector frozen."
        ),
    )
    section.checks.append(Check(
        name=f"append p99 while a sidecar drains {backlog:,} events <= {TARGET:g}x idle p99",
        passed=median(ratios) <= TARGET,
        detail=f"{fmt_us(median([d['p99'] for d in sd]))} vs {fmt_us(median([i['p99'] for i in si]))}: "
               f"{fmt_ratio(median(ratios))} (repeats {fmt_range(ratios, fmt_ratio)})",
    ))
    rows = []
    for label, ss, pooled in (("idle", si, pooled_i), ("while a sidecar drains", sd, pooled_d)):
        rows.append([
            label,
            *_latency_cells(ss),
            fmt_us(pooled["p99"]),
            fmt_us(median([s["p99.9"] for s in ss])),
            fmt_us(max(s["max"] for s in ss)),
        ])
    section.tables.append(Table(
        title="Append latency, idle vs while the backlog drains",
        headers=["phase", "appends", "p50", "p99", "p99 over repeats", "p99 pooled", "p99.9", "max"],
        rows=rows,
        note=f"The drain of {backlog:,} events took {fmt_range([x['drain_s'] for x in infos], lambda v: f'{v:.2f} s')} "
             "(sidecar's `start()` to its counter reaching the backlog), so each repeat's drain phase holds "
             f"about {median([s['n'] for s in sd]):,.0f} appends: its p99 is a handful of the slowest. "
             "p99 over repeats: the spread of each repeat's p99; pooled: over all repeats' appends at once."
             + (" Some drains outlasted the appender's run: their windows are cut short."
                if any(x["truncated"] for x in infos) else ""),
    ))
    section.tables.append(_diagnostics_table(diag, seconds))
    section.charts.append(Chart(
        filename="bench-contention-drain.png",
        title="Append latency: idle vs while a sidecar drains a backlog from the same file (log scale)",
        kind="latency_distribution",
        data={"unit": "us", "series": [
            {"label": "idle", "dist": distribution([x for xs in idle for x in xs])},
            {"label": f"while draining {backlog:,}", "dist": distribution([x for xs in drain for x in xs])},
        ]},
    ))
    section.raw = {"idle": si, "drain": sd, "drains": infos,
                   "diagnostics": {k: [_summary(x) for x in v] for k, v in diag.items()}}
    section.seconds = time.perf_counter() - started
    return section


def _latency_cells(ss: list[dict[str, float]]) -> list[str]:
    """Appends, median p50, median p99 and the p99s' spread, over one phase's repeats."""
    return [
        f"{int(sum(s['n'] for s in ss)):,}",
        fmt_us(median([s["p50"] for s in ss])),
        fmt_us(median([s["p99"] for s in ss])),
        fmt_range([s["p99"] for s in ss]),
    ]


def _diagnostics_table(diag: dict[str, list[list[int]]], seconds: float) -> Table:
    idle = [_summary(x) for x in diag["idle"]]
    rows = []
    for kind, label in DIAGNOSTICS.items():
        ss = [_summary(x) for x in diag[kind]]
        ratios = [s["p99"] / i["p99"] for s, i in zip(ss, idle)]
        rows.append([
            label,
            *_latency_cells(ss),
            fmt_us(median([s["p99.9"] for s in ss])),
            fmt_ratio(median(ratios)),
        ])
    return Table(
        title="Diagnostics: each ingredient of a drain alone, beside the same appender",
        headers=["beside the appender", "appends", "p50", "p99", "p99 over repeats", "p99.9", "p99 / idle p99"],
        rows=rows,
        note=f"The appender runs {seconds:g} s at {RATE:,}/s; the ingredient runs all along; appends after "
             "the first half second are kept (steady state, no start-up). A drain is a reader of the "
             "outbox file plus Postgres writing and syncing its WAL plus CPU for both; here each runs "
             "alone. Repeats take turns, the order rotating.",
    )
