"""Drain an outbox's pending events into Postgres, timed: the shipper, or a baseline on the same rows.

Usage: ``python -m bench.procs.drainer MODE PATH DSN [BATCH]``

``ship``
    ``Shipper(PATH, DSN)`` with its defaults ships everything pending. Timed from the loop's first
    batch to the last commit (connecting and claiming the lease are reported apart); each step of
    every batch is timed by wrapping the shipper's own methods (a few clock reads per batch).
``sink``
    ``PostgresSink.send`` of the same events, read from the file beforehand (untimed): the
    exactly-once transaction (ledger row + COPY) without the shipping loop around it.
``copy``
    The same events routed into rows beforehand (untimed), then ``copy_records_to_table`` in
    ``BATCH``-row batches (one implicit transaction each) into ``raw_copy_*`` tables of the same
    shape: raw COPY, the floor.

``ship_stdlib``: the shipper without the ``fast`` extra (the standard json module), as a plain install runs it.
``ship_text``: diagnostic, the shipper sending a route's batches as COPY text, never as typed rows
in a binary COPY (:mod:`shipper.typedrows`), to show what the binary COPY gains.

Two diagnostics: ``ship_serial``, the shipper with its read-ahead turned off (each batch read
when needed), and ``sink_reading``, ``sink`` reading the next batch from the outbox beside each
send, as the shipper's read-ahead does (the batches sent are still the ones read beforehand).

Prints ``ready {"rows": n, "rss": bytes}``, waits for ``go`` on stdin, prints one JSON report.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
import psutil  # type: ignore[import-untyped]

from outbox import Event, OutboxReader
from shipper import Shipper
from shipper.collector import for_shipping
from shipper.pgsink import PostgresSink
from outbox.payload import compact_json
from shipper.rows import COMMAND_COLUMNS, COMMAND_TOPIC, EVENT_COLUMNS
from shipper.sink import Batch

from ..backlog import BENCH_ROUTES, RAW_TABLES

T = TypeVar("T")


class Clock:
    """Seconds and calls per step, summed over the drain."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)
        self.first: dict[str, float] = {}

    def add(self, key: str, t0: float) -> None:
        now = time.perf_counter()
        self.seconds[key] += now - t0
        self.calls[key] += 1
        self.first.setdefault(key, t0)

    def wrap(self, key: str, fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(fn)
        async def timed(*args: Any, **kwargs: Any) -> T:
            t0 = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                self.add(key, t0)

        return timed

    def wrap_sync(self, key: str, fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> T:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(key, t0)

        return timed


def _timed_connection(clock: Clock) -> type:
    class TimedConnection(asyncpg.Connection):  # type: ignore[misc]
        """Times the sink's statements: BEGIN + ledger row, COPY, COMMIT."""

        async def execute(self, query: str, *args: Any, timeout: float | None = None) -> str:
            t0 = time.perf_counter()
            try:
                status: str = await super().execute(query, *args, timeout=timeout)
                return status
            finally:
                key = "pg_begin_ledger" if query.startswith("BEGIN") else "pg_commit" if query == "COMMIT" else "pg_other"
                clock.add(key, t0)

        async def copy_records_to_table(self, table_name: str, **kwargs: Any) -> str:
            t0 = time.perf_counter()
            try:
                status: str = await super().copy_records_to_table(table_name, **kwargs)
                return status
            finally:
                clock.add("pg_copy", t0)

    return TimedConnection


async def _backend_cpu(conn: Any) -> float | None:
    """CPU seconds used so far by the Postgres backend serving ``conn`` (if it runs on this host)."""
    try:
        pid = await conn.fetchval("SELECT pg_backend_pid()")
        times = psutil.Process(pid).cpu_times()
    except (psutil.Error, OSError, asyncpg.PostgresError):
        return None
    return float(times.user + times.system)


def _rss() -> int:
    return int(psutil.Process().memory_info().rss)


def _peak_rss() -> int:
    """This process image's own high-water mark (VmHWM; ru_maxrss would include the parent's,
    inherited through fork and kept across exec)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


class _RssSampler(threading.Thread):
    """Sample RSS and progress every ``interval`` s on a thread of its own, off the event loop."""

    def __init__(self, progress: Callable[[], int], interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.progress = progress
        self.interval = interval
        self.samples: list[tuple[float, int, int]] = []  # (seconds, rows shipped, rss bytes)
        self.halt = threading.Event()

    def run(self) -> None:
        proc = psutil.Process()
        t0 = time.perf_counter()
        while True:
            self.samples.append((round(time.perf_counter() - t0, 3), self.progress(), int(proc.memory_info().rss)))
            if self.halt.wait(self.interval):
                return


_released = 0  # CLOCK_MONOTONIC ns at "go", comparable across processes


async def _ready(rows: int) -> None:
    global _released
    print("ready " + json.dumps({"rows": rows, "rss": _rss()}), flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    if line.strip() != "go":
        raise SystemExit("no go")
    _released = time.monotonic_ns()


async def _read_all(path: str, batch: int) -> tuple[str, list[list[Event]]]:
    chunks: list[list[Event]] = []
    async with OutboxReader(path) as reader:
        after = await reader.cursor()
        while True:
            events = await reader.read_pending(batch, after=after)
            if not events:
                return reader.outbox_id, chunks
            chunks.append(events)
            after = events[-1].seq


def _instrument_sink(clock: Clock) -> None:
    """Time the sink's statements and its routing, wherever a PostgresSink is made from now on.

    ``pg_trip`` is the fast path's one query (BEGIN, ledger row, COPY, COMMIT); ``route`` is
    ``Batch.routed`` (in the shipper, computed by the read-ahead; in the sink, by ``send``).
    """
    import shipper.pgsink as pgsink
    import shipper.routes as routes

    pgsink.connect = functools.partial(pgsink.connect, connection_class=_timed_connection(clock))  # type: ignore[attr-defined]
    pgsink.copy_with_statements = clock.wrap("pg_trip", pgsink.copy_with_statements)  # type: ignore[attr-defined]
    routes.Router.route = clock.wrap_sync("route", routes.Router.route)  # type: ignore[method-assign]


async def _read_alone(path: str, batch: int, n: int = 20) -> list[float]:
    """Seconds each of the first ``n`` batch reads takes with nothing else running."""
    out = []
    async with OutboxReader(path) as reader:
        after = await reader.cursor()
        for _ in range(n):
            t0 = time.perf_counter()
            events = await reader.read_pending(batch, after=after, on_loop=True)  # as the read-ahead reads
            out.append(time.perf_counter() - t0)
            if not events:
                break
            after = events[-1].seq
    return out


def _no_read_ahead() -> None:
    """Diagnostic: make the shipper read each batch only when it needs it.

    The loop starts its read-ahead with ``asyncio.ensure_future(self.read_batch(...))``; here
    the name ``asyncio`` in :mod:`shipper.readahead` alone is pointed at a copy of the module whose
    ``ensure_future`` hands back ``None`` at once, which the loop takes as "nothing read ahead"
    and reads afresh. Nothing else changes.
    """
    import types

    import shipper.readahead as readahead_module

    real = asyncio

    def no_read_ahead(coro: Any) -> asyncio.Future[Any]:
        if getattr(coro, "__name__", "") != "read_batch":
            return real.ensure_future(coro)
        coro.close()
        done: asyncio.Future[Any] = real.get_running_loop().create_future()
        done.set_result(None)
        return done

    proxy = types.SimpleNamespace(**{k: getattr(real, k) for k in dir(real) if not k.startswith("__")})
    proxy.ensure_future = no_read_ahead
    readahead_module.asyncio = proxy  # type: ignore[attr-defined,assignment]


async def ship_stdlib(path: str, dsn: str, batch: int) -> dict[str, Any]:
    """The shipper as a plain install has it: payloads decoded (and json columns written) by the
    standard json module, orjson and msgspec (the ``fast`` extra, installed for the benchmarks)
    set aside."""
    import shipper.columnar as columnar
    import shipper.routes as routes

    routes._fast_loads = routes._fast_dumps = None  # type: ignore[attr-defined]
    columnar._msgspec = None  # type: ignore[attr-defined]
    return await ship(path, dsn, batch, mode="ship_stdlib")


async def ship_text(path: str, dsn: str, batch: int) -> dict[str, Any]:
    import shipper.routes as routes

    routes.typed_encoder = lambda *args: None  # type: ignore[assignment]  # no typed rows: every route batch as COPY text
    return await ship(path, dsn, batch, mode="ship_text")


async def ship_serial(path: str, dsn: str, batch: int) -> dict[str, Any]:
    _no_read_ahead()
    return await ship(path, dsn, batch, mode="ship_serial")


async def ship(path: str, dsn: str, batch: int, mode: str = "ship") -> dict[str, Any]:
    clock = Clock()
    _instrument_sink(clock)
    async with OutboxReader(path) as reader:
        pending = (await reader.status()).pending
    read_alone = await _read_alone(path, batch)
    s = Shipper(path, dsn, batch_size=batch, routes=BENCH_ROUTES)
    s._ship_once = clock.wrap("ship_once", s._ship_once)  # type: ignore[method-assign,assignment]
    s._maintain = clock.wrap("maintain", s._maintain)  # type: ignore[method-assign,assignment]
    s.sink.send = clock.wrap("send", s.sink.send)  # type: ignore[method-assign,assignment]
    s.reader.advance = clock.wrap("advance", s.reader.advance)  # type: ignore[method-assign,assignment]
    s.reader.read_pending = clock.wrap("read_pending", s.reader.read_pending)  # type: ignore[method-assign,assignment]
    await _ready(pending)
    rss_start = _rss()
    sampler = _RssSampler(lambda: s.stats.shipped)
    sampler.start()
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    await s.start()
    try:
        while s.stats.shipped + s.stats.dead < pending:  # the loop alone: no drain() polling beside it
            if s._task is not None and s._task.done():
                raise SystemExit(f"the shipper stopped: {s.stats.last_error}")
            await asyncio.sleep(0.002)
        t_end = time.perf_counter()
        cpu = time.process_time()
        backend_cpu = await _backend_cpu(s.sink.conn)  # type: ignore[attr-defined]
    finally:
        sampler.halt.set()
        await s.stop()
    t_first = clock.first.get("ship_once", t0)
    return {
        "mode": mode,
        "rows": s.stats.shipped,
        "dead": s.stats.dead,
        "batches": s.stats.batches,
        "retries": s.stats.retries,
        "startup_s": t_first - t0,
        "seconds": t_end - t_first,
        "steps": dict(clock.seconds),
        "calls": dict(clock.calls),
        "read_alone": read_alone,
        "cpu_s": cpu - cpu0,
        "backend_cpu_s": backend_cpu,
        "rss_start": rss_start,
        "rss_end": _rss(),
        "rss_hwm": _peak_rss(),
        "rss_series": sampler.samples,
    }


async def _no_set_aside(failures: list[tuple[Event, str]]) -> None:
    if failures:
        raise SystemExit(f"{len(failures)} rows refused: {failures[0][1]}")


async def sink_reading(path: str, dsn: str, batch: int) -> dict[str, Any]:
    return await sink(path, dsn, batch, reading=True)


async def sink(path: str, dsn: str, batch: int, reading: bool = False) -> dict[str, Any]:
    outbox_id, chunks = await _read_all(path, batch)
    clock = Clock()
    _instrument_sink(clock)
    target = PostgresSink(dsn, routes=BENCH_ROUTES)
    await target.open()
    clock.seconds.clear()
    clock.calls.clear()
    try:
        batches, after = [], 0
        for events in chunks:
            batches.append(Batch(outbox_id, after, events[-1].seq, events, router=target.router))
            after = events[-1].seq
        rows = sum(len(b.events) for b in batches)
        reader = await OutboxReader(path).open() if reading else None
        await _ready(rows)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for b in batches:
            # the diagnostic: read the next batch beside this send, as the shipper's read-ahead does
            ahead = asyncio.ensure_future(reader.read_pending(batch, after=b.last_seq, on_loop=True)) if reader else None
            await target.send(b, _no_set_aside)
            if ahead is not None:
                await ahead
        seconds = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        backend_cpu = await _backend_cpu(target.conn)
    finally:
        await target.close()
        if reading and reader is not None:
            await reader.close()
    return {"mode": "sink_reading" if reading else "sink", "rows": rows, "batches": len(batches), "seconds": seconds, "cpu_s": cpu,
            "backend_cpu_s": backend_cpu, "steps": dict(clock.seconds), "calls": dict(clock.calls)}


async def copy(path: str, dsn: str, batch: int) -> dict[str, Any]:
    _, chunks = await _read_all(path, batch)
    work = [_typed(events) for events in chunks]
    target = PostgresSink(dsn)  # for the connection only: same codecs as the shipper's
    await target.open()
    try:
        conn = target.conn
        rows = sum(len(r) for tables in work for _, _, r in tables)
        await _ready(rows)
        clock = Clock()
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        for tables in work:
            for name, columns, records in tables:
                t1 = time.perf_counter()
                await conn.copy_records_to_table(name, records=records, columns=columns)
                clock.add("pg_copy", t1)
        seconds = time.perf_counter() - t0
        t_done = time.monotonic_ns()
        cpu = time.process_time() - cpu0
        backend_cpu = await _backend_cpu(conn)
    finally:
        await target.close()
    return {"mode": "copy", "rows": rows, "batches": len(work), "seconds": seconds, "cpu_s": cpu, "t_done": t_done,
            "backend_cpu_s": backend_cpu, "steps": dict(clock.seconds), "calls": dict(clock.calls)}


def _typed(events: list[Event]) -> list[tuple[str, tuple[str, ...], list[tuple[Any, ...]]]]:
    """The events as typed rows for a binary COPY (untimed): what a hand-written loader would send."""
    by_table: dict[str, list[Event]] = defaultdict(list)
    for event in events:
        table = COMMAND_TOPIC if event.topic == COMMAND_TOPIC else BENCH_ROUTES.get(event.topic, "outbox_events")
        by_table[table].append(event)
    out = []
    for table, group in by_table.items():
        if table == "outbox_events":
            out.append((RAW_TABLES[table], EVENT_COLUMNS, [e[1:] for e in group]))
            continue
        rows = []
        for e in group:
            data = json.loads(e.payload)
            row = {**data, "id": e.id, "created_at": e.created_at}
            if row.get("options") is not None:
                row["options"] = compact_json(row["options"])
            if row.get("latency_ms") is not None:
                row["latency_ms"] = float(row["latency_ms"])
            rows.append(tuple(row.get(c) for c in COMMAND_COLUMNS))
        out.append((RAW_TABLES[table], COMMAND_COLUMNS, rows))
    return out


MODES: dict[str, Callable[[str, str, int], Coroutine[Any, Any, dict[str, Any]]]] = {
    "ship": ship,
    "ship_serial": ship_serial,
    "ship_stdlib": ship_stdlib,
    "ship_text": ship_text,
    "sink": sink,
    "sink_reading": sink_reading,
    "copy": copy,
}


def main(argv: list[str]) -> None:
    mode, path, dsn = argv[0], argv[1], argv[2]
    batch = int(argv[3]) if len(argv) > 3 else 1000
    for_shipping()  # the collector as `shipper run` and `shipper drain` set it, in every mode (the baselines too)
    report = asyncio.run(MODES[mode](path, dsn, batch))
    report["pid"] = os.getpid()
    report["t_go"] = _released
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
