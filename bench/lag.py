"""Append-to-Postgres lag: how long after ``append`` returns an event is visible in Postgres.

A child process appends command events at a steady rate (:mod:`bench.procs.pacer`) while the
shipper runs either in that same process (``Shipper(outbox=ob)``, woken by appends, gathering
those that keep coming for up to ``LINGER_S``, see :mod:`shipper.wakeup`) or as a
sidecar process (:mod:`bench.procs.sidecar`, polling every ``flush_interval``, default 50 ms).
Visibility is learnt from Postgres itself (:mod:`bench.watch`): a NOTIFY sent by each ledger row
arrives when its batch commits. Each event's lag is that arrival minus its ``created_at`` (the
wall clock read by ``append``; same machine, same clock).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import asyncpg

from shipper.wakeup import LINGER_S

from .backlog import PLAIN_TOPIC, outbox_id, prepare_database, read_topic, reset_database, wait_shipped
from .children import Child
from .core import Chart, Check, Context, Section, Table
from .timing import distribution, fmt_range, fmt_us, median, percentile
from .watch import LedgerWatcher, lags_us

_LINGER_MS = LINGER_S * 1000  # how long the in-process shipper gathers appends that keep coming

__all__ = ["run", "Trial", "lag_trial_stats"]

RATES = (100, 1_000, 10_000)
MODES = {"inprocess": "in-process shipper", "sidecar": "sidecar shipper (flush_interval 0.05 s)"}
TARGET_P99_MS = 50.0  # issue 6: in-process at 1,000 events/s, p99 <= 50 ms


@dataclass(frozen=True, kw_only=True)
class Trial:
    mode: str
    rate: int
    lags: list[float]  # us, per event
    begin_lags: list[float]  # us: shipped_at (the batch's transaction start) - created_at
    unseen: int
    achieved_rate: float
    batches: int | None
    probe: list[float]  # us: NOTIFY delivery, measured before the trial


def lag_trial_stats(lags: list[float]) -> dict[str, float]:
    ordered = sorted(lags)
    return {q: percentile(ordered, p) for q, p in (("p50", 50), ("p90", 90), ("p99", 99))} | {
        "max": ordered[-1] if ordered else float("nan")
    }


async def _begin_lags(dsn: str) -> list[float]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            "SELECT (extract(epoch FROM shipped_at) * 1e6 - extract(epoch FROM created_at) * 1e6)::float8"
            " FROM outbox_events WHERE topic = $1",
            PLAIN_TOPIC,
        )
    finally:
        await conn.close()
    return [float(r[0]) for r in rows]


async def _trial(ctx: Context, dsn: str, mode: str, rate: int, seconds: float, name: str) -> Trial:
    await reset_database(dsn)
    path = ctx.path(name)
    children: list[Child] = []
    side: Child | None = None
    side_report: dict[str, Any] = {}
    try:
        pacer_args = [str(path), str(rate), str(seconds)]
        if mode == "sidecar":
            side = await Child.start(ctx, "sidecar", str(path), dsn)
            children.append(side)
        else:
            pacer_args += ["--dsn", dsn]
        pacer = await Child.start(ctx, "pacer", *pacer_args)
        children.append(pacer)
        watcher = LedgerWatcher(dsn, await outbox_id(path))
        await watcher.start()
        try:
            probe = await watcher.calibrate(20)
            await pacer.go()
            report = await pacer.result(timeout=seconds + 180)
            if side is not None:
                await wait_shipped(path, 60)
                side.terminate()
                side_report = await side.result(timeout=60)
            await wait_shipped(path, 10)
            time_to_settle = time.monotonic() + 1.0
            events = await read_topic(path)
            while watcher.visible_at([events[-1].seq])[0] is None and time.monotonic() < time_to_settle:
                await asyncio.sleep(0.01)
        finally:
            await watcher.stop()
    finally:
        for c in children:
            await c.kill()
    visible = watcher.visible_at([e.seq for e in events])
    lags = lags_us([e.created_at for e in events], visible)
    batches = side_report["batches"] if mode == "sidecar" else report["batches"]
    return Trial(
        mode=mode,
        rate=rate,
        lags=lags,
        begin_lags=await _begin_lags(dsn),
        unseen=sum(v is None for v in visible),
        achieved_rate=report["n"] / ((report["t_end"] - report["t_start"]) / 1e9),
        batches=batches,
        probe=probe,
    )


async def run(ctx: Context) -> Section:
    started = time.perf_counter()
    seconds = ctx.scale(8.0, 2.0)
    repeats = ctx.scale(3, 1)
    dsn = await ctx.postgres.create_database("bench_lag")
    trials: list[Trial] = []
    try:
        await prepare_database(dsn, notify=True)
        combos = [(m, r) for r in RATES for m in MODES]
        for rep in range(repeats):
            k = rep % len(combos)
            for mode, rate in combos[k:] + combos[:k]:
                t = await _trial(ctx, dsn, mode, rate, seconds, f"lag-{mode}-{rate}-{rep}.db")
                trials.append(t)
                s = lag_trial_stats(t.lags)
                ctx.log(f"  {mode:9s} {rate:>6,}/s: p50 {fmt_us(s['p50'])}, p99 {fmt_us(s['p99'])}, "
                        f"max {fmt_us(s['max'])} ({len(t.lags):,} events, {t.unseen} unseen)")
    finally:
        await ctx.postgres.drop_database(dsn)

    section = Section(name="lag", title="Append-to-Postgres lag", intro=_intro(seconds, repeats))
    rows, series = [], []
    for rate in RATES:
        for mode, label in MODES.items():
            ts = [t for t in trials if t.mode == mode and t.rate == rate]
            stats = [lag_trial_stats(t.lags) for t in ts]
            begin = [lag_trial_stats(t.begin_lags) for t in ts]
            n = sum(len(t.lags) for t in ts)
            per_batch = [len(t.lags) / t.batches for t in ts if t.batches]
            rows.append([
                f"{rate:,}/s",
                label,
                fmt_us(median([s["p50"] for s in stats])),
                fmt_us(median([s["p99"] for s in stats])),
                fmt_range([s["p99"] for s in stats]),
                fmt_us(max(s["max"] for s in stats)),
                f"{fmt_us(median([s['p50'] for s in begin]))} / {fmt_us(median([s['p99'] for s in begin]))}",
                f"{median(per_batch):,.1f}" if per_batch else "n/a",
                f"{n:,}" + (f" ({sum(t.unseen for t in ts)} unseen)" if any(t.unseen for t in ts) else ""),
                f"{median([t.achieved_rate for t in ts]):,.0f}/s",
            ])
            series.append({"label": f"{label}, {rate:,}/s",
                           "dist": distribution([int(x * 1000) for t in ts for x in t.lags])})
            if mode == "inprocess" and rate == 1_000:
                p99s = [s["p99"] / 1000 for s in stats]
                section.checks.append(Check(
                    name=f"in-process shipper at 1,000 events/s: lag p99 <= {TARGET_P99_MS:g} ms",
                    passed=median(p99s) <= TARGET_P99_MS,
                    detail=f"p99 {median(p99s):.1f} ms (repeats {fmt_range(p99s, lambda x: f'{x:.1f} ms')}), "
                           f"p50 {median([s['p50'] for s in stats]) / 1000:.2f} ms",
                ))
    section.tables.append(Table(
        title="Lag from append to visible in Postgres",
        headers=["append rate", "shipper", "p50", "p99", "p99 over repeats", "max", "to the batch's BEGIN p50 / p99",
                 "events per batch", "events", "rate achieved"],
        rows=rows,
        note="p50, p99: medians over repeats of each repeat's percentile; max: the worst event of any "
             "repeat. *To the batch's BEGIN* is `shipped_at - created_at` read back from Postgres: "
             "`shipped_at` defaults to `now()`, the transaction's start, so it leaves out the COPY and "
             "the commit and is a lower bound; the notification-based figures are upper bounds. "
             "Events per batch: the shipper's own batch count (warm-up included).",
    ))
    section.charts.append(Chart(
        filename="bench-lag.png",
        title="Append-to-visible lag in Postgres (log scale)",
        kind="latency_distribution",
        data={"unit": "us", "series": series},
    ))
    probes = sorted(x for t in trials for x in t.probe)
    section.notes += [
        f"How late a notification arrives: {len(probes)} NOTIFYs sent from another connection (20 "
        "before each trial, with the appender and its shipper connected but idle) took "
        f"p50 {fmt_us(percentile(probes, 50))}, p99 {fmt_us(percentile(probes, 99))} from the request "
        "to their arrival. The lags above include that much; under load it can be more.",
        "At 10,000/s the appender's pacing is bursty: asyncio sleeps in whole milliseconds, so events "
        "are appended about ten at a time.",
        "The sidecar looks for new events every `flush_interval` (50 ms) when idle. After a batch "
        "that found events it looks again at once, but a small batch ships faster than events arrive "
        "even at 10,000/s, so within a few milliseconds it finds nothing and waits the full interval "
        "again: its lag is spread over 0-50 ms plus a batch's shipping time at every rate here. The "
        "in-process shipper is woken by appends instead: the first after a quiet spell ships at once, "
        f"and while the rate says another will come within {_LINGER_MS:g} ms it waits until the first is "
        f"{_LINGER_MS:g} ms old (or a batch's worth has come), so its lag is about {_LINGER_MS:g} ms plus a "
        "batch's shipping time at rates of 100/s and up, for far fewer batches (see the inprocess "
        "section for the CPU).",
        "The trigger that sends the NOTIFY runs in the shipper's transaction: one `pg_notify` per "
        "batch, small next to the COPY, but it is there.",
    ]
    section.raw = {"trials": [
        {"mode": t.mode, "rate": t.rate, "unseen": t.unseen, "achieved_rate": t.achieved_rate, "batches": t.batches,
         "lag": lag_trial_stats(t.lags), "begin_lag": lag_trial_stats(t.begin_lags), "events": len(t.lags)}
        for t in trials
    ]}
    section.seconds = time.perf_counter() - started
    return section


def _intro(seconds: float, repeats: int) -> str:
    return (
        f"A child process appends command events at 100, 1,000 and 10,000 per second for {seconds:g} s "
        "while a shipper ships them: **in-process** (`Shipper(path, dsn, outbox=ob)` on the appender's "
        "own event loop, woken by its appends) or a **sidecar** (`Shipper(path, dsn)` with its defaults "
        "in a process of its own, as `shipper run` runs it; it polls every 50 ms when idle). Before "
        "timing starts, 20 warm-up events are shipped, so connections are up. Visibility is measured "
        "in Postgres: a trigger on the ledger (written in the same transaction as the batch's rows) "
        "sends a NOTIFY, which Postgres delivers to a listener in the benchmark's own process when the "
        "batch commits; each event's lag is the arrival of the first notification covering its seq "
        "minus its `created_at` (the wall clock `append` read). "
        f"{repeats} repeat(s); the six combinations take turns, their order rotating."
    )
