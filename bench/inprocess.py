"""What the in-process shipper costs the bot's process: CPU per command, with its lag beside it.

A child process (:mod:`bench.procs.pacer`) appends command events at a steady rate, once with no
shipper at all and once with ``Shipper(path, dsn, outbox=ob)`` on its own event loop. The pacer
reports its CPU time (every thread's, so the shipper's reads on aiosqlite's thread count) from
the first timed append until, with the shipper, everything is shipped: the difference per event
is what shipping in the bot's process costs each command. The same trial's lag is measured as in
:mod:`bench.lag` (a NOTIFY per committed batch, stamped on arrival).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .backlog import outbox_id, prepare_database, read_topic, reset_database
from .children import Child
from .core import Check, Context, Section, Table
from .lag import lag_trial_stats
from .timing import fmt_range, fmt_us, median
from .watch import LedgerWatcher, lags_us

__all__ = ["run"]

RATES = (100, 1_000, 5_000)
TARGET_CPU_US = 50.0  # issue 16: <= +50 us of CPU per command at 1,000 commands/s
TARGET_P99_MS = 50.0  # issue 6: lag p99 <= 50 ms at 1,000 events/s


@dataclass(frozen=True, kw_only=True)
class Pair:
    rate: int
    events: int
    cpu_alone_s: float
    cpu_shipping_s: float
    lags: list[float]  # us
    batches: int

    @property
    def cpu_per_command_us(self) -> float:
        return (self.cpu_shipping_s - self.cpu_alone_s) / self.events * 1e6


async def _pacer(ctx: Context, name: str, rate: int, seconds: float, dsn: str | None) -> tuple[dict[str, float], list[float]]:
    """Run one pacer; with ``dsn`` its in-process shipper ships and the lag is measured."""
    path = ctx.path(name)
    args = [str(path), str(rate), str(seconds)] + (["--dsn", dsn] if dsn else ["--no-wait"])
    pacer = await Child.start(ctx, "pacer", *args)
    try:
        if dsn is None:
            await pacer.go()
            return await pacer.result(timeout=seconds + 120), []
        watcher = LedgerWatcher(dsn, await outbox_id(path))
        await watcher.start()
        try:
            await pacer.go()
            report = await pacer.result(timeout=seconds + 180)
        finally:
            await watcher.stop()
    finally:
        await pacer.kill()
    events = await read_topic(path)
    return report, lags_us([e.created_at for e in events], watcher.visible_at([e.seq for e in events]))


async def _pair(ctx: Context, dsn: str, rate: int, seconds: float, rep: int) -> Pair:
    await reset_database(dsn)
    alone, _ = await _pacer(ctx, f"inproc-alone-{rate}-{rep}.db", rate, seconds, None)
    shipping, lags = await _pacer(ctx, f"inproc-ship-{rate}-{rep}.db", rate, seconds, dsn)
    return Pair(
        rate=rate,
        events=int(shipping["n"]),
        cpu_alone_s=float(alone["cpu_s"]),
        cpu_shipping_s=float(shipping["cpu_s"]),
        lags=lags,
        batches=int(shipping["batches"]),
    )


async def run(ctx: Context) -> Section:
    started = time.perf_counter()
    seconds = ctx.scale(6.0, 2.0)
    repeats = ctx.scale(5, 1)  # CPU differences of two runs are noisy on shared cores: five, for the median
    dsn = await ctx.postgres.create_database("bench_inprocess")
    pairs: list[Pair] = []
    try:
        await prepare_database(dsn, notify=True)
        for rep in range(repeats):
            for rate in RATES[rep % len(RATES):] + RATES[: rep % len(RATES)]:
                p = await _pair(ctx, dsn, rate, seconds, rep)
                pairs.append(p)
                s = lag_trial_stats(p.lags)
                ctx.log(f"  {rate:>6,}/s: +{p.cpu_per_command_us:.1f} us CPU per command, "
                        f"{p.events / max(p.batches, 1):.1f} events per batch, lag p50 {fmt_us(s['p50'])}, p99 {fmt_us(s['p99'])}")
    finally:
        await ctx.postgres.drop_database(dsn)
    return _section(pairs, seconds, repeats, time.perf_counter() - started)


def _section(pairs: list[Pair], seconds: float, repeats: int, took: float) -> Section:
    section = Section(
        name="inprocess",
        title="The in-process shipper's cost to the bot's process",
        intro=(
            f"A child process appends command events at {', '.join(f'{r:,}' for r in RATES)} per second for "
            f"{seconds:g} s, once alone and once with `Shipper(path, dsn, outbox=ob)` shipping on its own "
            "event loop. Its CPU time (all threads) from the first timed append until everything is shipped, "
            "minus the same without a shipper, over the events appended, is what the shipper costs each "
            "command. Lag is measured in the same trial as in the lag section (a NOTIFY per committed "
            f"batch). {repeats} repeat(s) per rate, the rates taking turns."
        ),
    )
    rows = []
    for rate in RATES:
        ps = [p for p in pairs if p.rate == rate]
        cpu = [p.cpu_per_command_us for p in ps]
        stats = [lag_trial_stats(p.lags) for p in ps]
        rows.append([
            f"{rate:,}/s",
            f"**+{median(cpu):.1f} us**",
            fmt_range(cpu, lambda x: f"+{x:.1f} us"),
            f"{median([p.events / max(p.batches, 1) for p in ps]):,.1f}",
            fmt_us(median([s["p50"] for s in stats])),
            fmt_us(median([s["p99"] for s in stats])),
            fmt_us(max(s["max"] for s in stats)),
            f"{median([p.cpu_alone_s / p.events * 1e6 for p in ps]):.1f} us",
        ])
        if rate == 1_000:
            p99 = median([s["p99"] for s in stats]) / 1000
            section.checks += [
                Check(name=f"in-process shipper at 1,000 commands/s: <= +{TARGET_CPU_US:g} us CPU per command",
                      passed=median(cpu) <= TARGET_CPU_US, detail=f"+{median(cpu):.1f} us (repeats {fmt_range(cpu, lambda x: f'+{x:.1f} us')})"),
                Check(name=f"in-process shipper at 1,000 events/s: lag p99 <= {TARGET_P99_MS:g} ms",
                      passed=p99 <= TARGET_P99_MS, detail=f"p99 {p99:.1f} ms"),
            ]
    section.tables.append(Table(
        title="CPU per command and lag, in-process shipper",
        headers=["append rate", "shipper's CPU per command", "over repeats", "events per batch", "lag p50", "lag p99",
                 "lag max", "appending alone, CPU per command"],
        rows=rows,
        note="Medians over repeats. Events per batch: the shipper's own batch count (warm-up included).",
    ))
    section.raw = {"pairs": [
        {"rate": p.rate, "events": p.events, "cpu_alone_s": p.cpu_alone_s, "cpu_shipping_s": p.cpu_shipping_s,
         "batches": p.batches, "lag": lag_trial_stats(p.lags)} for p in pairs
    ]}
    section.seconds = took
    return section
