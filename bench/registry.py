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
    Benchmark(name="loss", title="Events lost to kill -9: create_task vs the outbox", target="bench.loss:run", needs_postgres=True),
    Benchmark(name="power", title='durability="power": group commit throughput', target="bench.power:run"),
    Benchmark(name="contention", title="Several processes appending to one file", target="bench.contention:run"),
    # Planned (issue 6, later parts): each will get its own module here.
    Benchmark(name="ship", title="Shipping throughput vs raw COPY", target=None, needs_postgres=True),
    Benchmark(name="lag", title="Append-to-Postgres lag", target=None, needs_postgres=True),
    Benchmark(name="scale", title="Behaviour at scale (large outbox, long runs)", target=None, needs_postgres=True),
    Benchmark(name="discord", title="The discord.py command path, end to end", target=None),
)


def by_name(name: str) -> Benchmark:
    """Return the benchmark called ``name``, or raise ``LookupError`` listing the known ones."""
    for bench in BENCHMARKS:
        if bench.name == name:
            return bench
    raise LookupError(f"no benchmark {name!r}; known: {', '.join(b.name for b in BENCHMARKS)}")
