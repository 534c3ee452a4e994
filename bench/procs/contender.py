"""Append to a shared outbox file and time each append: one of several contending processes.

Usage: ``python -m bench.procs.contender PATH N [RATE]``

Opens the outbox, warms up, prints ``ready`` and waits for a line on stdin, so every contender
starts together. Then appends ``N`` command events one at a time (yielding to the loop between
them, as a bot does; paced at ``RATE`` appends per second if given, else flat out), timing each
with the collector frozen, and prints one JSON line: its own
latency percentiles (microseconds), its start and end on the system-wide monotonic clock, and
the CPU seconds it used meanwhile.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time

from outbox import Outbox

from ..timing import distribution, gc_frozen
from ..workload import TOPIC, command_events


async def main(path: str, n: int, rate: float) -> None:
    events = command_events(2000, seed=os.getpid())
    async with Outbox(path) as ob:
        for i in range(200):
            await ob.append(TOPIC, events[i])
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
        samples: list[int] = []
        clock = time.perf_counter_ns
        with gc_frozen():
            cpu_start = time.process_time()
            t_start = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            for i in range(n):
                t0 = clock()
                await ob.append(TOPIC, events[i % 2000])
                samples.append(clock() - t0)
                if rate > 0:
                    delay = (i + 1) / rate - (time.clock_gettime_ns(time.CLOCK_MONOTONIC) - t_start) / 1e9
                    await asyncio.sleep(delay if delay > 0 else 0)
                else:
                    await asyncio.sleep(0)
            t_end = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
            cpu_s = time.process_time() - cpu_start
    print(json.dumps({"pid": os.getpid(), "n": n, "t_start": t_start, "t_end": t_end, "cpu_s": cpu_s, "in_append_s": sum(samples) / 1e9, "dist": distribution(samples)}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 0.0))
