"""Every benchmark ``python -m bench`` knows, in report order.

To add one: write ``bench/<name>.py`` with ``async def run(ctx: Context) -> Section`` and add a
line here. Entries whose ``target`` is ``None`` are planned; the report lists them as not yet
measured, and ``python -m bench NAME`` says so instead of running anything.
"""

from __future__ import annotations

from .core import Benchmark

__all__ = ["BENCHMARKS", "by_name"]

BENCHMARKS: tuple[Benchmark, ...] = (
    Benchmark(name="append", title="Command-path cost of recording one event", target="bench.append:run", needs_postgres=True),
    Benchmark(name="walbound", title="Sustained appends: what bounding the WAL costs", target="bench.walbound:run"),
    Benchmark(name="loss", title="Events lost to kill -9: create_task vs the outbox", target="bench.loss:run", needs_postgres=True),
    Benchmark(name="power", title='durability="power": group commit throughput', target="bench.power:run"),
    Benchmark(name="contention", title="Several processes appending to one file", target="bench.contention:run"),
    Benchmark(name="contention_drain", title="Appending while a sidecar drains a backlog",
              target="bench.contention_drain:run", needs_postgres=True),
    # Shipping (issue 6, parts 2-6): child processes under bench/procs/ do the work.
    Benchmark(name="ship", title="Shipping throughput vs raw COPY", target="bench.ship:run", needs_postgres=True),
    Benchmark(name="lag", title="Append-to-Postgres lag", target="bench.lag:run", needs_postgres=True),
    Benchmark(name="inprocess", title="The in-process shipper's cost to the bot's process", target="bench.inprocess:run",
              needs_postgres=True),
    Benchmark(name="outage", title="Lag through a Postgres outage", target="bench.outage:run", needs_postgres=True),
    Benchmark(name="scale", title="Several outboxes into one Postgres", target="bench.scale:run", needs_postgres=True),
    Benchmark(name="discord", title="The discord.py command path, end to end", target="bench.discord_path:run",
              needs_postgres=True),
    Benchmark(name="wan", title="Shipping across a WAN (delay proxy)", target="bench.wan:run", needs_postgres=True),
)


def by_name(name: str) -> Benchmark:
    """Return the benchmark called ``name``, or raise ``LookupError`` listing the known ones."""
    for bench in BENCHMARKS:
        if bench.name == name:
            return bench
    raise LookupError(f"no benchmark {name!r}; known: {', '.join(b.name for b in BENCHMARKS)}")
