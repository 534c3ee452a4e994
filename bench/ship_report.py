"""The shipping benchmark's tables: throughput, where each batch's time goes, CPU, memory.

Kept apart from :mod:`bench.ship` (which measures) so each stays readable in one sitting. Every
figure is a median over the repeats of one scenario; per-batch times divide a trial's totals by
its batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shipper.progress import NOTE_EVERY_S

from .core import Table
from .timing import fmt_range, fmt_ratio, median

__all__ = ["METHODS", "Scenario", "throughput_table", "breakdown_table", "cpu_table", "memory_table"]

METHODS = {
    "ship": "the shipper",
    "ship_serial": "diagnostic: the shipper, read-ahead off",
    "ship_stdlib": "the shipper without the fast extra (the standard json module)",
    "ship_text": "diagnostic: the shipper, a route's batches as COPY text (no binary COPY of typed rows)",
    "sink": "PostgresSink.send from memory",
    "sink_reading": "diagnostic: PostgresSink.send from memory, reading the next batch beside each send",
    "copy": "raw COPY from memory",
}

Trials = dict[str, dict[str, list[dict[str, Any]]]]


@dataclass(frozen=True, kw_only=True)
class Scenario:
    """One backlog to drain, and where to."""

    key: str
    label: str
    path: Path
    n: int
    dsn: str
    table: str  # where the shipper's rows land
    repeats: int
    modes: tuple[str, ...] = ("ship", "sink", "copy")
    local: bool = True  # on the benchmarks' own Postgres (its processes' CPU can be counted)


def _rates(ts: list[dict[str, Any]]) -> list[float]:
    return [t["rows"] / t["seconds"] for t in ts]


def _num(x: float) -> str:
    return f"{x:,.0f}"


def throughput_table(scenarios: Sequence[Scenario], trials: Trials, ratios: dict[str, list[float]]) -> Table:
    rows = []
    for sc in scenarios:
        copy = trials[sc.key]["copy"]
        for mode in sc.modes:
            ts = trials[sc.key][mode]
            rates = _rates(ts)
            per_repeat = [a / b for a, b in zip(rates, _rates(copy))]
            rows.append([
                sc.label,
                f"**{METHODS[mode]}**" if mode == "ship" else METHODS[mode],
                _num(median(rates)),
                fmt_range(rates, _num),
                fmt_ratio(median(per_repeat)),
                fmt_range(per_repeat, fmt_ratio),
                f"{median([t['seconds'] for t in ts]):.2f} s",
            ])
    return Table(
        title="Drain throughput, rows per second",
        headers=["backlog", "method", "rows/s", "over repeats", "vs raw COPY", "ratio over repeats", "time"],
        rows=rows,
        note="The shipper's time runs from its first batch to the last commit; connecting, migrating "
             "(a no-op here) and taking the lease came to "
             + ", ".join(f"{median([t['startup_s'] * 1000 for t in trials[sc.key]['ship']]):.0f} ms" for sc in scenarios)
             + " before that, in the order of the rows above. The drain is watched through the "
             "shipper's own counters, not `drain()`, whose polling of the outbox would run beside it.",
    )


def _per_batch(ts: list[dict[str, Any]], key: str) -> float:
    """Milliseconds per 1,000 events in step ``key`` (batch sizes differ between methods)."""
    return median([t["steps"].get(key, 0.0) / t["rows"] * 1e6 for t in ts])


def _steps(ts: list[dict[str, Any]], mode: str) -> dict[str, float]:
    """Milliseconds per 1,000 events for each step of one method."""
    total = median([t["seconds"] / t["rows"] * 1e6 for t in ts])
    if mode == "copy":
        copy = _per_batch(ts, "pg_copy")
        return {"trip": copy, "other": max(0.0, total - copy), "total": total}
    trip, route, stmts = _per_batch(ts, "pg_trip"), _per_batch(ts, "route"), _per_batch(ts, "pg_other")
    send = _per_batch(ts, "send")
    out = {"trip": trip, "total": total}
    if mode.startswith("ship"):
        # the read-ahead routes each batch (Batch.routed) while the previous one is in flight
        once = _per_batch(ts, "ship_once")
        out["read_wait"] = max(0.0, once - send)
        out["send_other"] = max(0.0, send - trip - stmts)
        out["other"] = max(0.0, total - once)
        out["notes"] = median([100 * t["calls"].get("advance", 0) / t["batches"] for t in ts])
        out["read_any"] = median([t["steps"]["read_pending"] / t["rows"] * 1e6 for t in ts])
        out["read_alone"] = median([median(t["read_alone"]) * 1000 for t in ts])
    else:  # the sink from memory: send itself is not wrapped, its parts are
        out["route"] = route
        out["other"] = max(0.0, total - route - trip - stmts)
    return out


_STEPS = (
    ("read_wait", "wait for read"),
    ("route", "route"),
    ("trip", "Postgres: the batch's one query"),
    ("send_other", "rest of send"),
    ("other", "rest"),
    ("total", "**total**"),
    ("notes", "progress notes per 100 batches"),
    ("read_any", "a read, as run"),
    ("read_alone", "a read, alone"),
)


def breakdown_table(scenarios: Sequence[Scenario], trials: Trials) -> Table:
    rows = []
    for sc in scenarios:
        for mode in ("copy", "sink", "sink_reading", "ship", "ship_text", "ship_stdlib", "ship_serial"):
            if mode not in sc.modes:
                continue
            c = _steps(trials[sc.key][mode], mode)
            cells = []
            for key, _ in _STEPS:
                value = c.get(key)
                text = "" if value is None or (value == 0 and key not in ("trip", "total")) else (
                    f"{value:.0f}" if key == "notes" else f"{value:.2f}")
                cells.append(f"**{text}**" if key == "total" and text else text)
            rows.append([sc.key, METHODS[mode], *cells])
    return Table(
        title="Where the time goes (ms per 1,000 events, medians over repeats)",
        headers=["backlog", "method", *(label for _, label in _STEPS)],
        rows=rows,
        note="Steps, timed by wrapping the shipper's and the sink's own methods and the connection's "
             "calls in the child process: *wait for read*, the loop waiting for its batch (the "
             "read-ahead's result, or a read of its own); *route*, events to rows (`Batch.routed`: "
             "decodes the JSON of command_calls events into columns) -- in the shipper the read-ahead "
             "does it, off the critical path, so it has no column there; *the batch's one query*: for "
             "raw COPY, `copy_records_to_table` with its implicit commit; for the sink and the "
             "shipper, `BEGIN; INSERT INTO outbox_ledger ..; COPY .. FROM STDIN; COMMIT` sent as one "
             "query (`shipper.pgcopy`); *rest*, everything else in the loop. The last three columns "
             "are not part of the total: how many progress notes (`advance`, a write to the side "
             f"file, started in the background at most every {NOTE_EVERY_S:g} s while busy) were written per 100 "
             "batches; *a read, as run*, the time reading took (`read_pending`, run on the "
             "loop's thread in steps of 256 rows) per 1,000 events in that trial -- with the read-ahead "
             "on, it runs while the previous batch is in flight -- and *a read, alone*, 1,000 events "
             "read before the trial with nothing else running. Every figure is per 1,000 events, so "
             "methods whose batches differ in size (the shipper's grow) compare directly. Backlogs: "
             + "; ".join(f"{sc.key} = {sc.label}" for sc in scenarios) + ".",
    )


def cpu_table(scenarios: Sequence[Scenario], trials: Trials) -> Table:
    rows = []
    for sc in scenarios:
        for mode in sc.modes:
            ts = trials[sc.key][mode]
            k = [t["rows"] / 1000 for t in ts]
            client = median([t["cpu_s"] * 1000 / n for t, n in zip(ts, k)])
            backend = [t["backend_cpu_s"] * 1000 / n for t, n in zip(ts, k) if t.get("backend_cpu_s") is not None]
            aux = [t["pg_aux_cpu_s"] * 1000 / n for t, n in zip(ts, k) if t.get("pg_aux_cpu_s") is not None]
            busy = [
                (t["cpu_s"] + (t.get("backend_cpu_s") or 0.0) + (t.get("pg_aux_cpu_s") or 0.0)) / t["seconds"]
                for t in ts
            ]
            rows.append([
                sc.label,
                METHODS[mode],
                f"{client:.2f}",
                f"{median(backend):.2f}" if backend else "n/a",
                f"{median(aux):.2f}" if aux else "n/a",
                f"{median(busy):.2f}" + ("" if aux else " (client + backend)"),
            ])
    return Table(
        title="CPU per 1,000 rows, both sides of the socket",
        headers=["backlog", "method", "client process, ms", "its Postgres backend, ms",
                 "other Postgres processes, ms", "cores busy (of 2)"],
        rows=rows,
        note="Client: the child's own CPU time (all threads) over the timed part. Backend: the CPU "
             "time of the Postgres process serving its connection, read from /proc (it includes "
             "connecting). Other Postgres processes: WAL writer, checkpointer and the like, over the "
             "trial (embedded server only). Cores busy: their sum over the wall time; the machine "
             "has 2.",
    )


def memory_table(scenarios: Sequence[Scenario], trials: Trials) -> Table:
    rows = []
    for sc in scenarios:
        if sc.key not in ("events", "large", "commands"):
            continue
        for i, t in enumerate(trials[sc.key]["ship"]):
            series = t["rss_series"]
            peak = max((rss for _, _, rss in series), default=0)
            rows.append([
                sc.label,
                str(i + 1),
                f"{t['rss_start'] / 2**20:.1f}",
                f"{peak / 2**20:.1f}",
                f"{t['rss_end'] / 2**20:.1f}",
                f"{t['rss_hwm'] / 2**20:.1f}",
                f"{(peak - t['rss_start']) / 2**20:+.1f}",
            ])
    return Table(
        title="The shipper's resident memory while draining (MiB)",
        headers=["backlog", "run", "when released", "peak during the drain", "at the end",
                 "high-water mark (VmHWM)", "peak - start"],
        rows=rows,
        note="Sampled every 50 ms by a thread in the shipper's process, from the moment it was "
             "released until the last commit. The high-water mark covers the process's whole life, "
             "imports and a short probe reading 20 batches included.",
    )
