"""Sustained appends: what bounding the WAL costs the command path.

PASSIVE checkpoints alone let the WAL grow without end while appends keep coming; the outbox
now follows a PASSIVE with a RESTART once the WAL passes ``WAL_BOUND_BYTES``, which holds
appenders back for a few milliseconds. This section appends enough, one coroutine flat out
(yielding once per call, as a bot does), for that to happen many times, and compares the
bounded outbox with the same outbox unbounded (the old behaviour) and with the raw sqlite floor,
interleaved block by block in one run.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

from outbox import Outbox
from outbox.append import WAL_BOUND_BYTES

from .core import Check, Context, Section, Table
from .methods import FACTORIES, Events, Target
from .timing import LatencyMethod, Summary, fmt_range, fmt_ratio, fmt_us, interleaved, median, summarize
from .workload import TOPIC

__all__ = ["run"]

# The issue-2 targets (p50 <= 1.5x, p99 <= 2x the floor) are checked by section ``append``; here,
# what the bound adds on top of the same code without it.
COST_LIMITS = {"p50": 1.1, "p99": 1.25}
MIB = 1024 * 1024


async def _outbox(stack: AsyncExitStack, path: Path, ev: Events, *, bounded: bool, peak: dict[str, int]) -> LatencyMethod:
    ob = await Outbox(path).open()
    stack.push_async_callback(ob.close)
    if not bounded:
        ob._wal_bound = 2**62  # the old behaviour: PASSIVE checkpoints only
    key = "bounded" if bounded else "unbounded"
    append, payloads, wal = ob.append, ev.payloads, f"{path}-wal"

    def call(i: int) -> object:
        if i % 1000 == 0:  # untimed in effect: one stat per 1,000 appends
            peak[key] = max(peak.get(key, 0), os.stat(wal).st_size if os.path.exists(wal) else 0)
        return append(TOPIC, payloads[i])

    label = "Outbox.append, WAL bounded (now)" if bounded else "Outbox.append, PASSIVE only (before)"
    return LatencyMethod(key=key, label=label, is_async=True, call=call)


# A sidecar's reads, in a process of its own: batches of 1,000 past a cursor on each file (the
# floor's too, so all three share the same load),
# each read a short transaction, as the shipper's are. Its snapshots are what keep a PASSIVE
# checkpoint from ever letting the WAL start over.
_READER = """
import sqlite3, sys, time
conns = [sqlite3.connect(p, isolation_level=None) for p in sys.argv[1:]]
cursors = [0] * len(conns)
while True:
    for i, conn in enumerate(conns):
        rows = conn.execute("SELECT seq, payload FROM events WHERE seq > ? ORDER BY seq LIMIT 1000", (cursors[i],)).fetchall()
        if rows:
            cursors[i] = rows[-1][0]
    time.sleep(0.002)
"""


async def run(ctx: Context) -> Section:
    started = time.perf_counter()
    # blocks long enough (80 MB of WAL each) that the bound is met inside a block, not in a pause
    repeats, rounds, block = ctx.scale(3, 2), ctx.scale(6, 3), 20_000
    events = Events.make(repeats * rounds * block)
    workdir = ctx.workdir / "walbound"
    workdir.mkdir(exist_ok=True)
    for name in os.listdir(workdir):
        os.remove(workdir / name)
    peak: dict[str, int] = {}
    async with AsyncExitStack() as stack:
        methods = [
            await _outbox(stack, workdir / "bounded.db", events, bounded=True, peak=peak),
            await _outbox(stack, workdir / "unbounded.db", events, bounded=False, peak=peak),
            await FACTORIES["floor"](stack, Target(workdir=workdir), events),
        ]
        ctx.log(f"  3 methods x {repeats} repeats x {rounds} rounds x {block} events, a reader process beside")
        reader = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _READER, *(str(workdir / f"{name}.db") for name in ("bounded", "unbounded", "floor"))
        )
        try:
            samples = await interleaved(methods, repeats=repeats, rounds=rounds, block=block, log=ctx.log)
        finally:
            reader.kill()
            await reader.wait()
    per = {k: [summarize(s) for s in runs] for k, runs in samples.items()}
    section = Section(
        name="walbound",
        title="Sustained appends: what bounding the WAL costs",
        intro=(
            f"{repeats * rounds * block:,} command events per method from one coroutine, each call timed and"
            f" followed by `await asyncio.sleep(0)`; {repeats} repeats of {rounds} rounds of {block}-event"
            f" blocks, order rotating. The bounded outbox makes its WAL start over past"
            f" {WAL_BOUND_BYTES // MIB} MiB (PASSIVE, then RESTART, on its checkpoint thread); the"
            " unbounded one is the same code with the bound switched off. A second process reads all three"
            " files as a sidecar does (1,000 events past a cursor, every 2 ms)."
        ),
    )
    rows = []
    for m in methods:
        runs = per[m.key]
        rows.append([
            m.label,
            fmt_us(median([s.p50 for s in runs])),
            fmt_us(median([s.p99 for s in runs])),
            fmt_us(median([s.p999 for s in runs])),
            fmt_us(median([s.max for s in runs])),
            f"{peak[m.key] / MIB:.0f} MiB" if m.key in peak else "SQLite's autocheckpoint",
        ])
    section.tables.append(Table(title="Cost per event under sustained appends", headers=["method", "p50", "p99", "p99.9", "max", "largest -wal"], rows=rows))
    checks, table = _checks(per, peak)
    section.tables.append(table)
    section.checks.extend(checks)
    section.raw = {"per_repeat": {k: [vars(s) for s in v] for k, v in per.items()}, "peak_wal_bytes": peak}
    section.seconds = time.perf_counter() - started
    print("walbound: the WAL bound's cost", flush=True)
    for row in table.rows:
        print(f"  {row[0]}: {row[2]} (repeats {row[3]})", flush=True)
    for check in checks:
        print(f"  {'PASS' if check.passed else 'FAIL'}  {check.name}: {check.detail}", flush=True)
    return section


def _checks(per: dict[str, list[Summary]], peak: dict[str, int]) -> tuple[list[Check], Table]:
    ours, before, floor = per["bounded"], per["unbounded"], per["floor"]

    def ratios(attr: str, over: list[Summary]) -> list[float]:
        return [getattr(o, attr) / getattr(f, attr) for o, f in zip(ours, over)]

    rows = []
    for attr, name in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9")):
        r = ratios(attr, before)
        limit = COST_LIMITS.get(attr)
        rows.append([f"bounded {name} / unbounded {name} (the bound's cost)", f"<= {limit:g}" if limit else "", fmt_ratio(median(r)), fmt_range(r, fmt_ratio)])
    for attr in ("p50", "p99"):
        r = ratios(attr, floor)
        rows.append([f"for reference: bounded {attr} / floor {attr} under this load", "", fmt_ratio(median(r)), fmt_range(r, fmt_ratio)])
    checks = [
        Check(
            name=f"the WAL bound costs append {attr} <= {limit:g}x",
            passed=median(ratios(attr, before)) <= limit,
            detail=fmt_ratio(median(ratios(attr, before))),
        )
        for attr, limit in COST_LIMITS.items()
    ]
    wal = peak.get("bounded", 0)
    checks.append(
        Check(
            name=f"largest -wal <= 2 x {WAL_BOUND_BYTES // MIB} MiB (one checkpoint's overshoot)",
            passed=wal <= 2 * WAL_BOUND_BYTES,
            detail=f"{wal / MIB:.0f} MiB (unbounded: {peak.get('unbounded', 0) / MIB:.0f} MiB)",
        )
    )
    return checks, Table(title="Ratios, each the median of the per-repeat ratios", headers=["ratio", "target", "measured", "over repeats"], rows=rows)
