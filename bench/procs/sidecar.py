"""A sidecar shipper for the benchmarks: ``Shipper(PATH, DSN)`` with its defaults, as ``shipper run``.

Usage: ``python -m bench.procs.sidecar PATH DSN [--wait-go] [--until N]``

Prints ``ready`` once shipping has started (with ``--wait-go``: once imported and waiting, and
starts on ``go``, so several sidecars can start together). Ships until SIGTERM, then what is
pending, and exits; with ``--until N`` it stops by itself once N events have shipped. Prints
one JSON report: counters, when it started and when the N-th event shipped (CLOCK_MONOTONIC,
comparable across processes), and the CPU of its own process and of its Postgres backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any

import psutil  # type: ignore[import-untyped]

from shipper import Shipper
from shipper.collector import for_shipping


async def _backend_cpu(s: Shipper) -> float | None:
    try:
        pid = await s.sink.conn.fetchval("SELECT pg_backend_pid()")  # type: ignore[attr-defined]
        t = psutil.Process(pid).cpu_times()
    except Exception:  # not connected, or Postgres on another host: not counted
        return None
    return float(t.user + t.system)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    s = Shipper(args.path, args.dsn, stop_timeout=60)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, s.request_stop)
    if args.wait_go:
        print("ready", flush=True)
        if (await loop.run_in_executor(None, sys.stdin.readline)).strip() != "go":
            raise SystemExit("no go")
    cpu0 = time.process_time()
    t_start = time.monotonic_ns()
    await s.start()
    if not args.wait_go:
        print("ready", flush=True)
    t_done = None
    backend_cpu = None
    serving = asyncio.ensure_future(s.serve())
    try:
        if args.until:
            while s.stats.shipped < args.until and not serving.done():
                await asyncio.sleep(0.002)
            t_done = time.monotonic_ns()
            backend_cpu = await _backend_cpu(s)
            s.request_stop()
        else:
            await asyncio.wait({serving}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        await serving
    return {
        "shipped": s.stats.shipped,
        "batches": s.stats.batches,
        "retries": s.stats.retries,
        "last_error": s.stats.last_error,
        "t_start": t_start,
        "t_done": t_done,
        "cpu_s": time.process_time() - cpu0,
        "backend_cpu_s": backend_cpu,
    }


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR, stream=sys.stderr)
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("dsn")
    parser.add_argument("--wait-go", action="store_true")
    parser.add_argument("--until", type=int, default=0)
    for_shipping()  # the collector as `shipper run` sets it
    print(json.dumps(asyncio.run(main(parser.parse_args()))), flush=True)
