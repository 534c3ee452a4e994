"""The in-process shipper's CPU per command, measured inside one process.

Usage: ``python -m bench.procs.interleaved DIR DSN RATE PAIRS SECONDS``

Comparing two processes, one appending alone and one with ``Shipper(path, dsn, outbox=ob)``,
leaves the per-process noise of a shared 2-core host in the difference: the alone process's
own CPU per append moves by tens of microseconds from one process to the next (one run's five
pairs at 1,000/s ranged from -38 to +64 us). Here one process holds two outboxes in ``DIR``,
one with an in-process shipper and one without, and appends command events to them at ``RATE``
in alternating phases of ``SECONDS`` each, the order swapping every pair. A shipped phase ends
with ``drain()``, so its CPU covers shipping all it appended.

While the alone outbox takes its turn, the other outbox's shipper is idle in the same process,
looking for other writers' events (once a second on a still file): that CPU lands in the alone phase
and would cancel out of the difference. So after the pairs the process's CPU rate is measured
with the shipper idle, then with it stopped; the report carries both, and the caller adds the
difference, per command at ``RATE``, back to each pair. The collector is frozen and off, as in
the pacer. Prints ``ready``, waits for ``go``, prints one JSON report.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from outbox import Outbox
from shipper import Shipper

from ..backlog import PLAIN_TOPIC
from ..workload import command_events

IDLE_S = 3.0  # each of the two idle measurements


async def _phase(ob: Outbox, rate: int, seconds: float, events: list[dict[str, Any]], shipper: Shipper | None) -> float:
    """CPU seconds per append of one phase (and, with a shipper, of shipping it all)."""
    n = int(rate * seconds)
    cpu0, t0 = time.process_time(), time.monotonic()
    for i in range(n):
        delay = t0 + i / rate - time.monotonic()
        await asyncio.sleep(delay if delay > 0 else 0)
        await ob.append(PLAIN_TOPIC, events[i % len(events)])
    if shipper is not None:
        await shipper.drain(timeout=120)
    return (time.process_time() - cpu0) / n


async def _cpu_rate(seconds: float) -> float:
    """This process's CPU seconds per second over ``seconds`` of doing nothing itself."""
    cpu0 = time.process_time()
    await asyncio.sleep(seconds)
    return (time.process_time() - cpu0) / seconds


async def main(workdir: Path, dsn: str, rate: int, pairs: int, seconds: float) -> dict[str, Any]:
    events = command_events(2000, seed=3)
    shipped_path, alone_path = workdir / "interleaved-shipped.db", workdir / "interleaved-alone.db"
    loop = asyncio.get_running_loop()
    async with Outbox(shipped_path) as shipped, Outbox(alone_path) as alone:
        shipper = Shipper(shipped_path, dsn, outbox=shipped, stop_timeout=60)
        await shipper.start()
        try:
            for i in range(20):  # the connection up, both files warm
                await shipped.append("bench_warmup", events[i])
                await alone.append("bench_warmup", events[i])
            await shipper.drain(timeout=60)
            print("ready", flush=True)
            if (await loop.run_in_executor(None, sys.stdin.readline)).strip() != "go":
                raise SystemExit("no go")
            batches_before = shipper.stats.batches
            gc.collect()
            gc.freeze()
            gc.disable()
            with_shipper: list[float] = []
            without: list[float] = []
            try:
                for k in range(pairs):
                    order: list[tuple[Outbox, Shipper | None]] = [(shipped, shipper), (alone, None)]
                    for ob, s in order[:: 1 if k % 2 == 0 else -1]:
                        (with_shipper if s is not None else without).append(await _phase(ob, rate, seconds, events, s))
                batches = shipper.stats.batches - batches_before
                idle_with = await _cpu_rate(IDLE_S)
            finally:
                gc.enable()
                gc.unfreeze()
        finally:
            await shipper.stop()
        idle_without = await _cpu_rate(IDLE_S)
    return {
        "rate": rate,
        "events_per_phase": int(rate * seconds),
        "shipped_s_per_append": with_shipper,
        "alone_s_per_append": without,
        "batches": batches,
        "idle_with_shipper_cpu_per_s": idle_with,
        "idle_without_cpu_per_s": idle_without,
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    a = sys.argv[1:]
    if len(a) != 5:
        raise SystemExit("usage: python -m bench.procs.interleaved DIR DSN RATE PAIRS SECONDS")
    report = asyncio.run(main(Path(a[0]), a[1], int(a[2]), int(a[3]), float(a[4])))
    print(json.dumps(report), flush=True)
