"""Run the benchmarks and write the report.

    python -m bench                    # everything; writes docs/BENCHMARKS.md and docs/*.png
    python -m bench append contention  # a subset; report goes to bench/out/report/
    python -m bench --quick            # a fast smoke run (few samples); bench/out/report/
    python -m bench --report-from bench/out/latest.json   # redraw a report without measuring

Only a full run writes into ``docs/`` (unless ``--out`` says otherwise), so the committed report
always comes from one run of every benchmark. Raw results of every run are kept as JSON under
``bench/out/`` (git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

from .core import ROOT, Context, Section
from .machine import describe, load_average
from .pg import LOOPBACK_DSN, Postgres, redact, server_version
from .registry import BENCHMARKS, by_name
from .report import Run, load_run, save_run, write_report

OUT = ROOT / "bench" / "out"
DOCS = ROOT / "docs"


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="benchmarks to run (default: all); see --list")
    parser.add_argument("--quick", action="store_true", help="a fast smoke run with few samples")
    parser.add_argument("--dsn", help="Postgres to use (default: $OUTBOX_TEST_DSN, else an embedded server)")
    parser.add_argument("--out", type=Path, help="directory for the report and charts")
    parser.add_argument("--report-from", type=Path, metavar="JSON", help="write the report from a saved run")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    parser.add_argument("--debug", action="store_true", help="print tracebacks of failing benchmarks")
    return parser.parse_args(argv)


async def _run(args: argparse.Namespace, names: list[str], command: str) -> tuple[Run, bool]:
    chosen = [by_name(n) for n in names]
    postgres = Postgres(args.dsn or os.environ.get("OUTBOX_TEST_DSN") or None)
    OUT.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="work-", dir=OUT))
    started = time.perf_counter()
    ok = True
    try:
        pg_rows: list[str] = []
        if any(b.needs_postgres for b in chosen):
            _log("starting an embedded Postgres ..." if postgres.embedded else "connecting to Postgres ...")
            await postgres.dsn()
            pg_rows.append(f"{postgres.description}: the Postgres targets")
            loopback = await server_version(LOOPBACK_DSN, timeout=2)
            if loopback:
                pg_rows.append(f"{loopback} (the machine's own, TCP loopback {redact(LOOPBACK_DSN)}): the TCP rows")
        run = Run(
            started_at=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            command=command,
            quick=args.quick,
            machine=describe(workdir, pg_rows),
        )
        ctx = Context(quick=args.quick, workdir=workdir, postgres=postgres, log=_log)
        for bench in chosen:
            _log(f"== {bench.name}: {bench.title}")
            t0 = time.perf_counter()
            try:
                section = await bench.load()(ctx)
            except Exception as exc:  # one benchmark failing must not lose the others' figures
                ok = False
                if args.debug:
                    traceback.print_exc()
                _log(f"bench {bench.name} failed: {type(exc).__name__}: {exc}")
                section = Section(name=bench.name, title=bench.title, notes=[f"FAILED in this run: {type(exc).__name__}: {exc}"])
            section.seconds = section.seconds or time.perf_counter() - t0
            run.sections.append(section)
            _log(f"   {bench.name} took {time.perf_counter() - t0:.0f} s")
        run.seconds = time.perf_counter() - started
        run.load_after = load_average()
        return run, ok
    finally:
        postgres.close()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.list:
        for b in BENCHMARKS:
            print(f"{b.name:17s} {b.title}{'' if b.target else '  (planned)'}")
        return 0
    if args.report_from is not None:
        try:
            run = load_run(args.report_from)
        except (OSError, ValueError, KeyError) as exc:
            _log(f"cannot read {args.report_from}: {exc}")
            return 2
        out = write_report(run, args.out or OUT / "report")
        _log(f"wrote {out}")
        return 0
    try:
        names = args.names or [b.name for b in BENCHMARKS if b.target is not None]
        for n in names:
            if by_name(n).target is None:
                raise LookupError(f"benchmark {n!r} is planned but not built yet")
    except LookupError as exc:
        _log(str(exc.args[0]))
        return 2
    full = not args.names and not args.quick
    command = "python -m bench" + (" --quick" if args.quick else "") + "".join(f" {n}" for n in args.names)
    try:
        run, ok = asyncio.run(_run(args, names, command))
    except KeyboardInterrupt:
        _log("interrupted")
        return 130
    except (OSError, RuntimeError) as exc:
        if args.debug:
            traceback.print_exc()
        _log(f"bench: {exc}")
        return 1
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    save_run(run, OUT / f"results-{stamp}.json")
    save_run(run, OUT / "latest.json")
    out = write_report(run, args.out or (DOCS if full else OUT / "report"))
    _log(f"wrote {out} (raw results: {OUT / f'results-{stamp}.json'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
