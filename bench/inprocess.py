"""What the in-process shipper costs the bot's process: CPU per command, with its lag beside it.

CPU: one child process (:mod:`bench.procs.interleaved`) per rate holds two outboxes, one with
``Shipper(path, dsn, outbox=ob)`` and one without, and appends command events to them in
alternating phases at the rate, each shipped phase ending once all of it is shipped. The
difference of the two phases' CPU per append (every thread's, so the shipper's reads count), pair
by pair, plus what the shipper costs while idle (it looks for other writers' events when the file
changes, and about once a second, see shipper.filewatch; measured in the same child, spread
over the rate's commands), is what shipping in the bot's process costs each command. It used to be the difference of two separate
processes, whose own CPU per append differs by tens of microseconds on a shared 2-core host: the
figure at 1,000/s flipped either side of the goal between runs of the same code (pairs from -38
to +73 us).

Lag: a child (:mod:`bench.procs.pacer`) with an in-process shipper appends at the rate for a few
seconds, and each event's lag is measured as in :mod:`bench.lag` (a NOTIFY per committed batch,
stamped on arrival).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

from .backlog import outbox_id, prepare_database, read_topic, reset_database
from .children import Child
from .core import Check, Context, Section, Table
from .lag import lag_trial_stats
from .timing import fmt_us, median
from .watch import LedgerWatcher, lags_us

__all__ = ["run"]

RATES = (100, 1_000, 5_000)
TARGET_CPU_US = 50.0  # issue 16: <= +50 us of CPU per command at 1,000 commands/s
TARGET_P99_MS = 50.0  # issue 6: lag p99 <= 50 ms at 1,000 events/s
PHASE_S = {100: 3.0, 1_000: 1.0, 5_000: 1.0}  # at least 300 commands a phase


@dataclass(frozen=True, kw_only=True)
class CpuRun:
    """One interleaved child's report at one rate."""

    rate: int
    events_per_phase: int
    shipped: list[float]  # CPU s per append, shipped phases
    alone: list[float]  # and the alone phases, pair by pair
    idle_us_per_s: float  # the idle shipper's CPU, us per second
    batches: int

    @property
    def per_command_us(self) -> list[float]:
        """Each pair's cost of the shipper per command, its idle looks included."""
        idle = self.idle_us_per_s / self.rate
        return [(s - a) * 1e6 + idle for s, a in zip(self.shipped, self.alone)]

    @property
    def events_per_batch(self) -> float:
        return len(self.shipped) * self.events_per_phase / max(self.batches, 1)


def _quartiles(values: list[float]) -> tuple[float, float]:
    if len(values) < 4:
        return min(values), max(values)
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


async def _cpu(ctx: Context, dsn: str, rate: int, pairs: int, seconds: float) -> CpuRun:
    child = await Child.start(ctx, "interleaved", str(ctx.workdir), dsn, str(rate), str(pairs), str(seconds))
    try:
        await child.go()
        r = await child.result(timeout=pairs * 2 * seconds + 300)
    finally:
        await child.kill()
    return CpuRun(
        rate=rate,
        events_per_phase=int(r["events_per_phase"]),
        shipped=[float(x) for x in r["shipped_s_per_append"]],
        alone=[float(x) for x in r["alone_s_per_append"]],
        idle_us_per_s=(float(r["idle_with_shipper_cpu_per_s"]) - float(r["idle_without_cpu_per_s"])) * 1e6,
        batches=int(r["batches"]),
    )


async def _lag(ctx: Context, dsn: str, rate: int, seconds: float, rep: int) -> list[float]:
    """One pacer with its in-process shipper: each event's lag, us."""
    await reset_database(dsn)
    path = ctx.path(f"inproc-ship-{rate}-{rep}.db")
    pacer = await Child.start(ctx, "pacer", str(path), str(rate), str(seconds), "--dsn", dsn)
    try:
        watcher = LedgerWatcher(dsn, await outbox_id(path))
        await watcher.start()
        try:
            await pacer.go()
            await pacer.result(timeout=seconds + 180)
        finally:
            await watcher.stop()
    finally:
        await pacer.kill()
    events = await read_topic(path)
    return lags_us([e.created_at for e in events], watcher.visible_at([e.seq for e in events]))


async def run(ctx: Context) -> Section:
    started = time.perf_counter()
    seconds = ctx.scale(6.0, 2.0)
    repeats = ctx.scale(3, 1)
    pairs = ctx.scale(12, 4)
    dsn = await ctx.postgres.create_database("bench_inprocess")
    runs: dict[int, CpuRun] = {}
    lags: dict[int, list[list[float]]] = {rate: [] for rate in RATES}
    try:
        await prepare_database(dsn, notify=True)
        for rate in RATES:
            await reset_database(dsn)
            phase = ctx.scale(PHASE_S[rate], PHASE_S[rate] / 2)
            run_ = runs[rate] = await _cpu(ctx, dsn, rate, pairs, phase)
            cpu = run_.per_command_us
            ctx.log(f"  {rate:>6,}/s: +{median(cpu):.1f} us CPU per command (pairs {min(cpu):+.1f} to {max(cpu):+.1f}, "
                    f"idle shipper {run_.idle_us_per_s:,.0f} us/s), {run_.events_per_batch:.1f} events per batch")
        for rep in range(repeats):
            for rate in RATES[rep % len(RATES):] + RATES[: rep % len(RATES)]:
                lags[rate].append(await _lag(ctx, dsn, rate, seconds, rep))
                s = lag_trial_stats(lags[rate][-1])
                ctx.log(f"  {rate:>6,}/s: lag p50 {fmt_us(s['p50'])}, p99 {fmt_us(s['p99'])}")
    finally:
        await ctx.postgres.drop_database(dsn)
    return _section(runs, lags, seconds, repeats, pairs, time.perf_counter() - started)


def _section(
    runs: dict[int, CpuRun], lags: dict[int, list[list[float]]], seconds: float, repeats: int, pairs: int, took: float
) -> Section:
    section = Section(
        name="inprocess",
        title="The in-process shipper's cost to the bot's process",
        intro=(
            "CPU: one process per rate appends command events to two outboxes in turn, one with "
            "`Shipper(path, dsn, outbox=ob)` shipping on the same event loop and one without, in "
            f"{pairs} pairs of phases ({', '.join(f'{PHASE_S[r]:g} s at {r:,}/s' for r in RATES)} in a full run), "
            "the order swapping every pair; a shipped phase ends once all of it is shipped. The shipper's "
            "cost per command is the difference of the two phases' CPU per append (all threads), pair by "
            "pair, plus its CPU while idle (it looks for other writers' events when the file changes and about once a second; "
            "measured in the same process with the shipper idle and then stopped) spread over the rate's "
            "commands. One process for both sides, because two processes' own CPU per append differs by "
            "tens of microseconds on this host. Lag: a process with an in-process shipper appends at the "
            f"rate for {seconds:g} s and each event's lag is measured as in the lag section (a NOTIFY per "
            f"committed batch), {repeats} repeat(s) per rate, the rates taking turns."
        ),
    )
    rows = []
    for rate in RATES:
        r = runs[rate]
        cpu = r.per_command_us
        lo, hi = _quartiles(cpu)
        stats = [lag_trial_stats(trial) for trial in lags[rate]]
        rows.append([
            f"{rate:,}/s",
            f"**+{median(cpu):.1f} us**",
            f"+{lo:.1f} to +{hi:.1f} us",
            f"{min(cpu):+.1f} to {max(cpu):+.1f} us",
            f"+{r.idle_us_per_s / rate:.1f} us",
            f"{r.events_per_batch:,.1f}",
            fmt_us(median([s["p50"] for s in stats])),
            fmt_us(median([s["p99"] for s in stats])),
            fmt_us(max(s["max"] for s in stats)),
            f"{median(r.alone) * 1e6:.1f} us",
        ])
        if rate == 1_000:
            p99 = median([s["p99"] for s in stats]) / 1000
            section.checks += [
                Check(name=f"in-process shipper at 1,000 commands/s: <= +{TARGET_CPU_US:g} us CPU per command",
                      passed=median(cpu) <= TARGET_CPU_US,
                      detail=f"+{median(cpu):.1f} us (median of {len(cpu)} pairs; quartiles +{lo:.1f} to +{hi:.1f} us)"),
                Check(name=f"in-process shipper at 1,000 events/s: lag p99 <= {TARGET_P99_MS:g} ms",
                      passed=p99 <= TARGET_P99_MS, detail=f"p99 {p99:.1f} ms"),
            ]
    section.tables.append(Table(
        title="CPU per command and lag, in-process shipper",
        headers=["append rate", "shipper's CPU per command", "quartiles", "pairs", "of it, idle looks",
                 "events per batch", "lag p50", "lag p99", "lag max", "appending alone, CPU per command"],
        rows=rows,
        note=("CPU: median over pairs; idle looks: the idle shipper's CPU per second over the rate, included in "
              "the median. Events per batch: the shipper's batches in the timed phases. Lag: medians over repeats."),
    ))
    section.raw = {
        "cpu": [{"rate": r.rate, "events_per_phase": r.events_per_phase, "shipped_s_per_append": r.shipped,
                 "alone_s_per_append": r.alone, "idle_us_per_s": r.idle_us_per_s, "batches": r.batches}
                for r in runs.values()],
        "lag": {str(rate): [lag_trial_stats(t) for t in trials] for rate, trials in lags.items()},
    }
    section.seconds = took
    return section
