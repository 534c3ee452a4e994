"""Lag through a Postgres outage: appends go on, events wait in the outbox, none is lost.

A child process appends at a steady rate with its in-process shipper (as in :mod:`bench.lag`);
midway, the embedded Postgres is stopped with ``pg_ctl -m immediate`` (as if its host died) and
started again a few seconds later. Visibility is stamped by the same ledger listener, which
reconnects on its own. Afterwards every event in the outbox is looked for in Postgres.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg

from .backlog import PLAIN_TOPIC, outbox_id, prepare_database, read_topic
from .children import Child
from .core import Chart, Check, Context, Section, Table
from .lag import lag_trial_stats
from .timing import fmt_us, percentile
from .watch import LedgerWatcher

__all__ = ["run"]

RATE = 1_000


async def _ids_in_postgres(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT id::text FROM outbox_events WHERE topic = $1", PLAIN_TOPIC)
    finally:
        await conn.close()
    return {r[0] for r in rows}


async def run(ctx: Context) -> Section:
    started = time.perf_counter()
    section = Section(name="outage", title="Lag through a Postgres outage")
    if not ctx.postgres.embedded:
        section.notes.append("Not measured: this run's Postgres was given by --dsn, and only the embedded "
                             "server can be stopped and started by the benchmark.")
        return section
    seconds, down_at, down_for = ctx.scale(20.0, 10.0), ctx.scale(7.5, 3.0), ctx.scale(5.0, 3.0)
    dsn = await ctx.postgres.create_database("bench_outage")
    path = ctx.path("outage.db")
    marks: dict[str, float] = {}
    t0 = 0.0  # wall clock at "go": the chart's zero
    try:
        await prepare_database(dsn, notify=True)
        pacer = await Child.start(ctx, "pacer", str(path), str(RATE), str(seconds), "--dsn", dsn, "--samples")
        try:
            watcher = LedgerWatcher(dsn, await outbox_id(path))
            await watcher.start()
            try:
                t0 = time.time()
                await pacer.go()
                await asyncio.sleep(down_at)
                marks["stop"] = time.time() - t0
                await asyncio.to_thread(ctx.postgres.stop_server)
                marks["stopped"] = time.time() - t0
                ctx.log(f"  Postgres stopped at {marks['stopped']:.1f} s")
                try:
                    await asyncio.sleep(max(0.0, down_at + down_for - (time.time() - t0)))
                finally:
                    marks["start"] = time.time() - t0
                    await asyncio.to_thread(ctx.postgres.start_server)
                    marks["started"] = time.time() - t0
                ctx.log(f"  Postgres started again at {marks['started']:.1f} s (its helper returned)")
                report = await pacer.result(timeout=seconds + 240)
                await asyncio.sleep(0.5)
            finally:
                await watcher.stop()
        finally:
            await pacer.kill()
        events = await read_topic(path)
        in_pg = await _ids_in_postgres(dsn)
    finally:
        await ctx.postgres.drop_database(dsn)

    visible = watcher.visible_at([e.seq for e in events])
    lost = [e.id for e in events if e.id not in in_pg]
    # When Postgres answered again: the listener's first reconnection (it tries every 50 ms), which
    # is earlier than start_server() returning (the embedded server's helper polls once a second).
    back_ns = min((t for t in watcher.reconnected if t >= (t0 + marks["stop"]) * 1e9),
                  default=(t0 + marks["started"]) * 1e9)
    marks["answering"] = back_ns / 1e9 - t0
    before = max((last for t, last in watcher.seen if t < (t0 + marks["stop"]) * 1e9), default=0)
    resumed = [t for t, last in sorted(watcher.seen) if t >= back_ns and last > before]
    resumed_s = (resumed[0] - back_ns) / 1e9 if resumed else None
    buckets: dict[int, list[float]] = {}
    lags: list[float] = []
    for e, v in zip(events, visible):
        if v is not None:
            lag = v / 1000 - e.created_at
            lags.append(lag)
            buckets.setdefault(int(e.created_at / 1e6 - t0), []).append(lag)
    seconds_in = sorted(buckets)
    xs = [x + 0.5 for x in seconds_in]  # each point in the middle of its second
    p50 = [percentile(sorted(buckets[x]), 50) / 1000 for x in seconds_in]
    worst = [max(buckets[x]) / 1000 for x in seconds_in]
    _fill(section, seconds=seconds, marks=marks, report=report, events=len(events), arrived=len(in_pg),
          lost=lost, lags=lags, resumed_s=resumed_s)
    spans = [{"from": marks["stop"], "to": marks["answering"], "label": "Postgres down"}]
    if resumed_s is not None and resumed_s > 0.05:
        spans.append({"from": marks["answering"], "to": marks["answering"] + resumed_s, "color": "C1",
                      "label": "Postgres up, the shipper still in its backoff"})
    section.charts.append(Chart(
        filename="bench-outage-lag.png",
        title=f"Lag per second of appends at {RATE:,}/s, Postgres stopped midway (log scale)",
        kind="lines",
        data={"x_label": "seconds into the run (events grouped by the second they were appended in)", "y_label": "append-to-visible lag (ms)",
              "log_y": True, "series": [{"label": "p50 of that second's events", "x": xs, "y": p50},
                                        {"label": "max of that second's events", "x": xs, "y": worst}],
              "spans": spans},
    ))
    section.raw = {"marks": marks, "resumed_s": resumed_s, "lost": lost[:100], "buckets": {str(x): lag_trial_stats(buckets[x]) for x in seconds_in},
                   "retries": report.get("retries"), "watcher_reconnects": watcher.reconnects}
    section.seconds = time.perf_counter() - started
    return section


def _fill(section: Section, *, seconds: float, marks: dict[str, float], report: dict[str, Any],
          events: int, arrived: int, lost: list[str], lags: list[float], resumed_s: float | None) -> None:
    down = marks["answering"] - marks["stop"]
    section.intro = (
        f"A child process appends command events at {RATE:,}/s for {seconds:g} s with its in-process "
        f"shipper. {marks['stop']:.1f} s in, the embedded Postgres is stopped with `pg_ctl -m immediate` "
        f"(its host dying, in effect: connections cut, transactions in flight lost) and started again "
        f"{marks['start'] - marks['stop']:.1f} s later; it answered again {marks['answering']:.1f} s in "
        f"(the listener's first reconnection; it tries every 50 ms), so Postgres was unreachable for "
        f"{down:.1f} s. Lag is measured as in the lag section (a NOTIFY per "
        "committed batch, the listener reconnecting by itself), per second of append time. Afterwards "
        "every event in the outbox is looked for in Postgres by id."
    )
    appended = report["n"]
    section.checks.append(Check(
        name="no event lost through the outage",
        passed=not lost and events == appended,
        detail=f"{appended:,} appended and acknowledged, {events:,} in the outbox, {arrived:,} in Postgres, "
               f"{len(lost)} missing",
    ))
    took = sorted(report.get("took", []))
    section.tables.append(Table(
        title="Through the outage",
        headers=["", ""],
        rows=[
            ["events appended (acknowledged)", f"{appended:,}"],
            ["events in the outbox", f"{events:,}"],
            ["events arriving in Postgres (by id)", f"{arrived:,}"],
            ["lost", f"**{len(lost)}**"],
            ["Postgres unreachable", f"{down:.1f} s (from {marks['stop']:.1f} s to {marks['answering']:.1f} s)"],
            ["first batch committed after Postgres answered again",
             f"{resumed_s:.2f} s later" if resumed_s is not None else "n/a"],
            ["shipper retries (failed attempts, backoff with full jitter)", str(report.get("retries"))],
            ["worst lag of any event", fmt_us(max(lags)) if lags else "n/a"],
            ["append p50 / p99 / max over the whole run, outage included",
             f"{fmt_us(percentile(took, 50) / 1000)} / {fmt_us(percentile(took, 99) / 1000)} / "
             f"{fmt_us(took[-1] / 1000) if took else 'n/a'}"],
        ],
        note="The shipper retries with exponential backoff and full jitter (base 0.1 s, doubling per "
             "failed attempt, capped at 30 s), so after an outage of a few seconds its next attempt can "
             "come up to a few seconds after Postgres is back; the gap above is that wait.",
    ))
