"""Several outboxes, each with its own shipper process, into one Postgres.

1, 2 and 4 outbox files (bot shards with a file each), each holding the same backlog, each
drained by a sidecar of its own (:mod:`bench.procs.sidecar`), all released at once. Against it,
the same number of raw COPY processes (:mod:`bench.procs.drainer` ``copy``) sending the same
rows: what Postgres on this machine can take from that many connections. CPU is counted per
process kind (shippers, their Postgres backends, Postgres's other processes) and for the whole
machine, to say what runs out first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import psutil  # type: ignore[import-untyped]

from .backlog import PLAIN_TOPIC, fill, prepare_database, reset_database, rewind
from .children import Child, cpu_delta, tree_cpu
from .core import Chart, Context, Section, Table
from .timing import fmt_range, fmt_ratio, median

__all__ = ["run"]

COUNTS = (1, 2, 4)
_MACHINE = ("machine_busy", "iowait")
METHODS = {"ship": "shippers (one sidecar per outbox)", "copy": "raw COPY (one process per outbox)"}


@dataclass(frozen=True, kw_only=True)
class Trial:
    k: int
    method: str
    rows: int
    seconds: float
    client_cpu: float
    backend_cpu: float | None
    aux_cpu: float | None
    machine_busy: float  # CPU seconds, every process on the machine, between the two readings
    iowait: float
    machine_wall: float  # seconds between the two readings


def _machine() -> tuple[float, float]:
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0) + getattr(t, "steal", 0.0)
    return float(busy), float(getattr(t, "iowait", 0.0))


async def _trial(ctx: Context, dsn: str, paths: list[Path], n: int, method: str) -> Trial:
    for p in paths:
        await rewind(p)
    await reset_database(dsn)
    children: list[Child] = []
    try:
        for p in paths:
            if method == "ship":
                children.append(await Child.start(ctx, "sidecar", str(p), dsn, "--wait-go", "--until", str(n)))
            else:
                children.append(await Child.start(ctx, "drainer", "copy", str(p), dsn))
        postmaster = ctx.postgres.postmaster_pid()
        aux0, (busy0, io0), w0 = tree_cpu(postmaster), _machine(), time.monotonic()
        for c in children:
            await c.go()
        reports = [await c.result(timeout=120 + n / 2000) for c in children]
        aux1, (busy1, io1), w1 = tree_cpu(postmaster), _machine(), time.monotonic()
    finally:
        for c in children:
            await c.kill()
    if method == "ship":
        start, end = min(r["t_start"] for r in reports), max(r["t_done"] for r in reports)
        rows = sum(r["shipped"] for r in reports)
    else:
        start, end = min(r["t_go"] for r in reports), max(r["t_done"] for r in reports)
        rows = sum(r["rows"] for r in reports)
    backends = [r.get("backend_cpu_s") for r in reports]
    return Trial(
        k=len(paths), method=method, rows=rows, seconds=(end - start) / 1e9,
        client_cpu=sum(r["cpu_s"] for r in reports),
        backend_cpu=None if any(b is None for b in backends) else sum(b for b in backends if b is not None),
        aux_cpu=cpu_delta(aux0, aux1) if postmaster else None,
        machine_busy=busy1 - busy0, iowait=io1 - io0, machine_wall=w1 - w0,
    )


async def run(ctx: Context) -> Section:
    started = time.perf_counter()
    n = ctx.scale(100_000, 20_000)
    repeats = ctx.scale(3, 1)
    paths = [ctx.path(f"scale-{i}.db") for i in range(max(COUNTS))]
    t0 = time.perf_counter()
    for i, p in enumerate(paths):
        await fill(p, n, PLAIN_TOPIC, seed=100 + i)
    ctx.log(f"  filled {len(paths)} outboxes of {n:,} events in {time.perf_counter() - t0:.0f} s")
    dsn = await ctx.postgres.create_database("bench_scale")
    trials: list[Trial] = []
    try:
        await prepare_database(dsn)
        for r in range(repeats):
            for i in range(len(COUNTS)):
                k = COUNTS[(i + r) % len(COUNTS)]
                for method in (("ship", "copy") if (r + i) % 2 == 0 else ("copy", "ship")):
                    t = await _trial(ctx, dsn, paths[:k], n, method)
                    trials.append(t)
                    ctx.log(f"  {k} x {method}: {t.rows / t.seconds:,.0f} rows/s aggregate, "
                            f"machine {t.machine_busy / t.machine_wall:.2f} cores busy")
    finally:
        await ctx.postgres.drop_database(dsn)
    return _section(trials, n, repeats, time.perf_counter() - started)


def _cores(ts: list[Trial], part: str) -> str:
    values = [getattr(t, part) / (t.machine_wall if part in _MACHINE else t.seconds)
              for t in ts if getattr(t, part) is not None]
    return f"{median(values):.2f}" if values else "n/a"


def _section(trials: list[Trial], n: int, repeats: int, seconds: float) -> Section:
    def of(k: int, method: str) -> list[Trial]:
        return [t for t in trials if t.k == k and t.method == method]

    def rate(ts: list[Trial]) -> list[float]:
        return [t.rows / t.seconds for t in ts]

    rows = []
    for k in COUNTS:
        for method, label in METHODS.items():
            ts = of(k, method)
            rs = rate(ts)
            base = median(rate(of(1, method)))
            vs_copy = [a / b for a, b in zip(rs, rate(of(k, "copy")))]
            rows.append([
                str(k), label, f"{median(rs):,.0f}", fmt_range(rs, lambda x: f"{x:,.0f}"),
                f"{median(rs) / k:,.0f}", fmt_ratio(median(rs) / base),
                fmt_ratio(median(vs_copy)) if method == "ship" else "",
                _cores(ts, "client_cpu"), _cores(ts, "backend_cpu"), _cores(ts, "aux_cpu"),
                _cores(ts, "machine_busy"), _cores(ts, "iowait"),
            ])
    section = Section(
        name="scale",
        title="Several outboxes into one Postgres",
        intro=(
            f"1, 2 and 4 outbox files of {n:,} pending events each, every file drained by a sidecar "
            "shipper of its own (`Shipper(path, dsn)`, defaults; separate processes), all released at "
            "once into one Postgres; against it, as many raw COPY processes sending the same rows "
            "(built beforehand; 1,000-row `copy_records_to_table` batches). Aggregate rows/s: all rows "
            "over the span from the first start to the last finish. "
            f"{repeats} repeat(s), the counts and methods taking turns."
        ),
    )
    section.tables.append(Table(
        title="Aggregate throughput and where the CPU went (cores busy, of 2)",
        headers=["processes", "method", "aggregate rows/s", "over repeats", "per outbox", "vs 1 process",
                 "shippers vs raw COPY", "client processes", "their Postgres backends",
                 "other Postgres processes", "whole machine", "iowait"],
        rows=rows,
        note="Cores busy = CPU seconds over the trial's wall time. Client processes and their backends "
             "are counted by each child (its own CPU time, and its backend's from /proc); other Postgres "
             "processes (WAL writer, checkpointer, io workers) from the postmaster's children; whole "
             "machine from /proc/stat between a reading just before the release and one after the last "
             "child exited (so it includes their shutdown), over that interval; it also holds anything "
             "else running on this shared machine.",
    ))
    section.notes += _findings(trials)
    section.charts.append(Chart(
        filename="bench-scale.png",
        title="Aggregate rows/s into one Postgres: k shippers vs k raw COPY processes",
        kind="bars",
        data={"unit": "rows/s (median; bars span the repeats)",
              "categories": [f"{k} outbox{'es' if k > 1 else ''}" for k in COUNTS],
              "series": [{"label": label,
                          "values": [median(rate(of(k, m))) for k in COUNTS],
                          "low": [min(rate(of(k, m))) for k in COUNTS],
                          "high": [max(rate(of(k, m))) for k in COUNTS]} for m, label in METHODS.items()],
              "log": False},
    ))
    section.raw = {"trials": [vars(t) for t in trials]}
    section.seconds = seconds
    return section


def _findings(trials: list[Trial]) -> list[str]:
    """Say, from this run's figures, what limited the aggregate."""
    out: list[str] = []
    for method, label in METHODS.items():
        ts = {k: [t for t in trials if t.k == k and t.method == method] for k in COUNTS}
        rates = {k: median([t.rows / t.seconds for t in v]) for k, v in ts.items()}
        busy = {k: median([t.machine_busy / t.machine_wall for t in v]) for k, v in ts.items()}
        pg = {k: median([((t.backend_cpu or 0.0) + (t.aux_cpu or 0.0)) / t.seconds for t in v]) for k, v in ts.items()}
        client = median([t.client_cpu / t.rows * 1e6 for v in ts.values() for t in v])
        out.append(
            f"{label}: aggregate {', '.join(f'{rates[k]:,.0f}' for k in COUNTS)} rows/s with "
            f"{', '.join(str(k) for k in COUNTS)} processes; the machine was "
            f"{', '.join(f'{busy[k]:.2f}' for k in COUNTS)} cores busy, Postgres alone "
            f"{', '.join(f'{pg[k]:.2f}' for k in COUNTS)}. The client processes used {client:.2f} ms of "
            "CPU per 1,000 rows."
        )
    top = max(COUNTS)
    busy_top = median([t.machine_busy / t.machine_wall for t in trials if t.k == top])
    if busy_top >= 1.75:
        out.append(
            f"With {top} processes the machine's two cores were all but saturated ({busy_top:.2f} busy): "
            "from there CPU is what runs out, shared between Postgres and the processes feeding it, "
            "so a client that needs more CPU per row leaves Postgres less of it."
        )
    return out

