"""The in-process shipper's CPU per command, measured inside one process.

Usage: ``python -m bench.inprocess_interleaved [RATE] [PAIRS] [SECONDS]`` (default 1000 12 1.0).

The inprocess section compares two processes, one appending alone and one with
``Shipper(path, dsn, outbox=ob)``. On a shared 2-core host the alone process's own CPU per
append moves by tens of microseconds from process to process: one run's five pairs at 1,000/s
ranged from -38 to +64 us. Here one process holds two outboxes, one with an in-process shipper
and one without, and appends to them at ``RATE`` in alternating phases of ``SECONDS`` each (the
order swapping every pair). A shipped phase ends with ``drain()``, so its CPU covers shipping
everything it appended. The shipper's cost per command is the difference of the two phases'
CPU per append, pair by pair; the median and quartiles are printed. The collector is frozen
and off, as in the pacer. Not part of ``make bench``'s report: a sharper look at one figure.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from outbox import Outbox
from shipper import Shipper

from .backlog import PLAIN_TOPIC, prepare_database
from .pg import Postgres
from .workload import command_events


async def _phase(ob: Outbox, rate: int, seconds: float, events: list[dict[str, Any]], shipper: Shipper | None) -> float:
    """CPU seconds per append of one phase (and, with a shipper, of shipping it all)."""
    n = int(rate * seconds)
    cpu0, t0 = time.process_time(), time.monotonic()
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        await asyncio.sleep(delay if delay > 0 else 0)
        await ob.append(PLAIN_TOPIC, events[i % len(events)])
    if shipper is not None:
        await shipper.drain(timeout=60)
    return (time.process_time() - cpu0) / n


async def main(rate: int, pairs: int, seconds: float) -> None:
    postgres = Postgres(None)
    workdir = Path(tempfile.mkdtemp(prefix="inprocess-interleaved-"))
    try:
        dsn = await postgres.create_database("bench_interleaved")
        await prepare_database(dsn)
        events = command_events(2000, seed=3)
        shipped_path, alone_path = workdir / "shipped.db", workdir / "alone.db"
        async with Outbox(shipped_path) as shipped, Outbox(alone_path) as alone:
            shipper = Shipper(shipped_path, dsn, outbox=shipped, stop_timeout=60)
            await shipper.start()
            try:
                for i in range(20):  # connections up, files warm
                    await shipped.append("bench_warmup", events[i])
                    await alone.append("bench_warmup", events[i])
                await shipper.drain(timeout=30)
                gc.collect()
                gc.freeze()
                gc.disable()
                diffs = []
                try:
                    for k in range(pairs):
                        order: list[tuple[Outbox, Shipper | None]] = [(shipped, shipper), (alone, None)]
                        got = {s is not None: await _phase(ob, rate, seconds, events, s) for ob, s in order[:: 1 if k % 2 == 0 else -1]}
                        diffs.append((got[True] - got[False]) * 1e6)
                finally:
                    gc.enable()
                    gc.unfreeze()
            finally:
                await shipper.stop()
        d = sorted(diffs)
        print(f"{rate:,}/s: the in-process shipper's CPU per command, median {statistics.median(d):+.1f} us over {pairs} "
              f"pairs of {seconds:g} s phases (quartiles {d[len(d) // 4]:+.1f} to {d[3 * len(d) // 4]:+.1f}, "
              f"range {d[0]:+.1f} to {d[-1]:+.1f}); {shipper.stats.batches} batches", flush=True)
    finally:
        postgres.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(int(args[0]) if args else 1000, int(args[1]) if len(args) > 1 else 12,
                     float(args[2]) if len(args) > 2 else 1.0))
