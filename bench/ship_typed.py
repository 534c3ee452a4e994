"""Just the typed-column backlogs of the ship bench (command_calls and a user route), side by side.

Usage: ``python -m bench.ship_typed [N] [REPEATS]``: the same trials as ``python -m bench ship``
(``bench.ship._trial``: fresh child process per trial, shipper vs the shipper on COPY text alone
(``ship_text``) vs sink vs raw COPY of the same typed rows), for the two typed backlogs only, with medians and ratios printed. A quick way to
measure the routing path without the full ship section.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

from .backlog import ROUTE_TOPIC, fill, prepare_database
from .core import Context
from .pg import Postgres
from .ship import _trial
from .ship_report import Scenario
from .timing import median


async def main(n: int, repeats: int) -> None:
    postgres = Postgres(None)
    workdir = Path(tempfile.mkdtemp(prefix="ship-typed-"))
    try:
        await postgres.dsn()
        ctx = Context(quick=False, workdir=workdir, postgres=postgres, log=print)
        dsn = await ctx.postgres.create_database("bench_ship_typed")
        await prepare_database(dsn)
        scenarios = []
        for key, topic, table in (("commands", "command_calls", "command_calls"), ("route", ROUTE_TOPIC, ROUTE_TOPIC)):
            path = ctx.path(f"{key}.db")
            await fill(path, n, topic)
            scenarios.append(Scenario(key=key, label=key, path=path, n=n, dsn=dsn, table=table, repeats=repeats,
                                      modes=("ship", "ship_text", "sink", "copy")))
        for sc in scenarios:
            await _trial(ctx, sc, "copy")  # untimed, as in the ship bench
            rates: dict[str, list[float]] = {m: [] for m in sc.modes}
            cpu: dict[str, list[float]] = {m: [] for m in sc.modes}
            backend: dict[str, list[float]] = {m: [] for m in sc.modes}
            ratios, binary = [], []
            for r in range(repeats):
                order = sc.modes[r % len(sc.modes):] + sc.modes[: r % len(sc.modes)]
                got = {}
                for mode in order:
                    res = await _trial(ctx, sc, mode)
                    got[mode] = res["rows"] / res["seconds"]
                    rates[mode].append(got[mode])
                    cpu[mode].append(res["cpu_s"] * 1e6 / res["rows"])  # ms per 1,000 rows
                    if res.get("backend_cpu_s") is not None:
                        backend[mode].append(res["backend_cpu_s"] * 1e6 / res["rows"])
                ratios.append(got["ship"] / got["copy"])
                binary.append(got["ship"] / got["ship_text"])
            print(f"{sc.key}: " + ", ".join(f"{m} {median(v):,.0f}/s" for m, v in rates.items())
                  + f"; ship/copy median {median(ratios):.2f}x (repeats {min(ratios):.2f}-{max(ratios):.2f})"
                  + f"; ship/ship_text {median(binary):.2f}x", flush=True)
            print("  client CPU ms per 1,000 rows: " + ", ".join(f"{m} {median(v):.2f}" for m, v in cpu.items())
                  + "; Postgres backend: " + ", ".join(f"{m} {median(v):.2f}" for m, v in backend.items() if v), flush=True)
    finally:
        postgres.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(int(args[0]) if args else 100_000, int(args[1]) if len(args) > 1 else 5))
