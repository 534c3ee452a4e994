"""Append command events at a steady rate, as a bot does, optionally with its in-process shipper.

Usage: ``python -m bench.procs.pacer PATH RATE SECONDS [--dsn DSN] [--samples] [--warmup N]``

Opens the outbox (and with ``--dsn`` starts ``Shipper(PATH, DSN, outbox=ob)`` in this process,
woken by the appends). Appends ``N`` warm-up events (topic ``bench_warmup``) and waits until
whoever ships this file has shipped them -- so the Postgres connection is up before timing
starts -- then prints ``ready`` and waits for ``go``. Appends at ``RATE`` per second for
``SECONDS`` (each due at ``start + i / RATE``; a late one is appended at once, yielding to the
loop in between), then, with an in-process shipper, waits for it to ship everything. Prints one
JSON report (``cpu_s``: this process's CPU from the first append until all of it is shipped,
if it ships; else until the last append); with ``--samples``, every append's start (CLOCK_MONOTONIC ns) and duration (ns),
timed with the collector frozen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

from outbox import Outbox
from shipper import Shipper

from ..backlog import PLAIN_TOPIC, wait_shipped
from ..timing import gc_frozen
from ..workload import command_events

WARMUP_TOPIC = "bench_warmup"


async def main(args: argparse.Namespace) -> dict[str, Any]:
    events = command_events(2000, seed=3)
    loop = asyncio.get_running_loop()
    async with Outbox(args.path) as ob:
        shipper = Shipper(args.path, args.dsn, outbox=ob, stop_timeout=60) if args.dsn else None
        if shipper is not None:
            await shipper.start()
        try:
            for i in range(args.warmup):
                await ob.append(WARMUP_TOPIC, events[i])
            if args.warmup and not args.no_wait:
                await wait_shipped(Path(args.path), 60)
            print("ready", flush=True)
            if (await loop.run_in_executor(None, sys.stdin.readline)).strip() != "go":
                raise SystemExit("no go")
            starts: list[int] = []
            took: list[int] = []
            n = int(args.rate * args.seconds)
            clock = time.perf_counter_ns
            mono = time.monotonic_ns
            with gc_frozen():
                t0 = time.monotonic()
                t_start = mono()
                cpu_start = time.process_time()  # every thread's: the shipper's reads included
                for i in range(n):
                    delay = t0 + i / args.rate - time.monotonic()
                    await asyncio.sleep(delay if delay > 0 else 0)
                    s = mono()
                    c = clock()
                    await ob.append(args.topic, events[i % 2000])
                    took.append(clock() - c)
                    starts.append(s)
                t_end = mono()
            shipped_at_end = None
            if shipper is not None:
                await shipper.drain(timeout=args.drain_timeout)
                shipped_at_end = mono()
            cpu_s = time.process_time() - cpu_start  # appending, and shipping all of it if in-process
        finally:
            if shipper is not None:
                await shipper.stop()
    report: dict[str, Any] = {
        "n": n,
        "t_start": t_start,
        "t_end": t_end,
        "drained_at": shipped_at_end,
        "retries": shipper.stats.retries if shipper is not None else None,
        "batches": shipper.stats.batches if shipper is not None else None,
        "in_append_s": sum(took) / 1e9,
        "cpu_s": cpu_s,
    }
    if args.samples:
        report["starts"] = starts
        report["took"] = took
    return report


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("rate", type=float)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--dsn")
    parser.add_argument("--topic", default=PLAIN_TOPIC)
    parser.add_argument("--samples", action="store_true")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--no-wait", action="store_true", help="do not wait for the warm-up to ship")
    parser.add_argument("--drain-timeout", type=float, default=120.0)
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
