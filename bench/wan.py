"""Shipping across a WAN: a delay proxy 0, 50 and 150 ms each way, whole processes timed.

Hosted Postgres is 20-200 ms away. Each figure here is one whole process, started and timed
by the bench, through :class:`tests.delayproxy.DelayProxy` (which also counts round trips):

* ``shipper drain`` of a backlog, against a hand-written script doing one COPY of the same rows,
  and the same script in 1,000-row COPY calls (the shipper's ``batch_size``; the shipper's own
  batches grow past it while the backlog lasts);
* ``shipper drain`` with nothing pending (the fixed cost of a cron drain);
* ``outbox verify`` of the shipped backlog.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path


from .backlog import PLAIN_TOPIC, fill, prepare_database, reset_database, rewind
from .core import ROOT, Check, Context, Section, Table
from .timing import median

sys.path.insert(0, str(ROOT / "tests"))
from delayproxy import DelayProxy  # noqa: E402

__all__ = ["run"]

DELAYS_MS = (0, 50, 150)  # each way
TARGET_RATIO, EMPTY_S, VERIFY_S = 0.5, 2.0, 3.0  # issue 11, at 50 ms each way


async def _timed(ctx: Context, proxy: DelayProxy, *argv: str) -> tuple[float, int]:
    """Run a process to its end; return its wall time and the round trips it made."""
    proxy.reset()
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *argv, env=ctx.child_env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await proc.communicate()
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} {argv[1]} failed ({proc.returncode}): {err.decode()[-500:]}")
    return seconds, proxy.turns


async def run(ctx: Context) -> Section:
    started = time.perf_counter()
    n, reps = ctx.scale(100_000, 20_000), ctx.scale(3, 1)
    bindir = Path(sys.executable).parent
    dsn = await ctx.postgres.create_database("bench_wan")
    results: dict[int, dict[str, list[tuple[float, int]]]] = {}
    try:
        await prepare_database(dsn)
        path = ctx.path("wan.db")
        await fill(path, n, PLAIN_TOPIC)
        for delay_ms in DELAYS_MS:
            res: dict[str, list[tuple[float, int]]] = {k: [] for k in ("drain", "empty", "verify", "copy1", "copyb")}
            async with DelayProxy(dsn, delay_ms / 1000) as proxy:
                via = proxy.dsn()
                for _ in range(reps):
                    await rewind(path)
                    await reset_database(dsn)
                    res["drain"].append(await _timed(ctx, proxy, str(bindir / "shipper"), "drain", "--outbox", str(path), "--dsn", via))
                    res["empty"].append(await _timed(ctx, proxy, str(bindir / "shipper"), "drain", "--outbox", str(path), "--dsn", via))
                    res["verify"].append(await _timed(ctx, proxy, str(bindir / "outbox"), "verify", str(path), "--dsn", via))
                    for key, batch in (("copy1", "0"), ("copyb", "1000")):
                        await reset_database(dsn)
                        res[key].append(await _timed(ctx, proxy, ctx.python, "-m", "bench.procs.rawcopy", str(path), via, batch))
            results[delay_ms] = res
            ctx.log(f"  {delay_ms} ms each way: " + ", ".join(f"{k} {median([s for s, _ in v]):.2f} s" for k, v in res.items()))
    finally:
        await ctx.postgres.drop_database(dsn)
    return _section(n, reps, results, time.perf_counter() - started)


def _s(res: dict[str, list[tuple[float, int]]], key: str) -> float:
    return median([s for s, _ in res[key]])


def _trips(res: dict[str, list[tuple[float, int]]], key: str) -> int:
    return int(median([t for _, t in res[key]]))


def _section(n: int, reps: int, results: dict[int, dict[str, list[tuple[float, int]]]], seconds: float) -> Section:
    rows = []
    for delay_ms, res in results.items():
        ratio = _s(res, "copy1") / _s(res, "drain")
        rows.append([
            f"{delay_ms} ms ({2 * delay_ms} ms RTT)",
            f"{_s(res, 'drain'):.2f} s ({n / _s(res, 'drain'):,.0f}/s, {_trips(res, 'drain')} trips)",
            f"{_s(res, 'copy1'):.2f} s ({_trips(res, 'copy1')} trips)",
            f"{_s(res, 'copyb'):.2f} s ({_trips(res, 'copyb')} trips)",
            f"{ratio:.2f}x",
            f"{_s(res, 'empty'):.2f} s ({_trips(res, 'empty')} trips)",
            f"{_s(res, 'verify'):.2f} s ({_trips(res, 'verify')} trips)",
        ])
    section = Section(
        name="wan",
        title="Shipping across a WAN (delay proxy)",
        intro=(__doc__ or "").split("\n\n", 1)[1].strip() + f"\n\n{n:,} events of ~200 bytes; median of {reps} run(s).",
    )
    section.tables.append(Table(
        title="Whole processes through the delay proxy",
        headers=["delay each way", "shipper drain", "raw COPY, one call", "raw COPY, 1,000-row calls",
                 "drain vs one COPY", "drain, nothing pending", "outbox verify"],
        rows=rows,
        note="Trips: round trips counted at the proxy (the client speaking after the server answered), "
             "connection set-up included.",
    ))
    at = results.get(50)
    if at is not None:
        ratio = _s(at, "copy1") / _s(at, "drain")
        section.checks += [
            Check(name=f"drain of {n:,} at 100 ms RTT >= {TARGET_RATIO}x one raw COPY", passed=ratio >= TARGET_RATIO,
                  detail=f"{ratio:.2f}x: {_s(at, 'drain'):.2f} s vs {_s(at, 'copy1'):.2f} s"),
            Check(name=f"drain with nothing pending <= {EMPTY_S:g} s at 100 ms RTT", passed=_s(at, "empty") <= EMPTY_S,
                  detail=f"{_s(at, 'empty'):.2f} s, {_trips(at, 'empty')} round trips"),
            Check(name=f"outbox verify of {n:,} <= {VERIFY_S:g} s at 100 ms RTT", passed=_s(at, "verify") <= VERIFY_S,
                  detail=f"{_s(at, 'verify'):.2f} s, {_trips(at, 'verify')} round trips"),
        ]
    section.raw = {"n": n, "results": {str(k): v for k, v in results.items()}}
    section.seconds = seconds
    return section


