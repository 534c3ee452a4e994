"""``durability="power"``: what group commit buys when every event must reach the disk.

Each method records events durably against power loss, in alternating blocks, and the figure is
events per second over a block (the median over blocks, with their spread). The outbox in power
mode is run with 64 coroutines appending at once (sharing fsyncs) and with one (no one to share
with); the baselines pay one ``fdatasync`` per event. Process mode, which never fsyncs on the
command path, is shown as the ceiling.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from outbox import Outbox

from .core import Chart, Context, Section, Table
from .timing import fmt_range, fmt_ratio, fmt_us, gc_frozen, median, summarize
from .workload import TOPIC, command_events, serialise

__all__ = ["run"]

SQLITE_TABLE = """CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY, id TEXT NOT NULL, topic TEXT NOT NULL,
    payload TEXT NOT NULL, created_at INTEGER NOT NULL)"""


SHORT = {
    "power64": "power mode, 64 appenders",
    "power1": "power mode, 1 appender",
    "fdatasync": "write + fdatasync per event",
    "sqlite_full": "INSERT per event, synchronous=FULL",
    "process1": "process mode, 1 appender (no fsync)",
}


@dataclass(frozen=True, kw_only=True)
class Method:
    key: str
    label: str
    events: int  # per block
    block: Callable[[int], Awaitable[list[int]]]  # run one block from event n; per-event ns


async def _appenders(ob: Outbox, payloads: list[dict[str, object]], start: int, n: int, writers: int) -> list[int]:
    per = n // writers
    samples: list[int] = []

    async def writer(w: int) -> None:
        clock = time.perf_counter_ns
        base = start + w * per
        for i in range(base, base + per):
            t0 = clock()
            await ob.append(TOPIC, payloads[i % len(payloads)])
            samples.append(clock() - t0)

    await asyncio.gather(*(writer(w) for w in range(writers)))
    return samples


def _outbox_method(ob: Outbox, key: str, label: str, writers: int, events: int, payloads: list[dict[str, object]]) -> Method:
    async def block(start: int) -> list[int]:
        return await _appenders(ob, payloads, start, events, writers)

    return Method(key=key, label=label, events=events, block=block)


def _fdatasync_method(path: Path, events: int, records: list[bytes]) -> tuple[Method, Callable[[], None]]:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)

    async def block(start: int) -> list[int]:
        clock = time.perf_counter_ns
        out = []
        for i in range(start, start + events):
            t0 = clock()
            os.write(fd, records[i % len(records)])
            os.fdatasync(fd)
            out.append(clock() - t0)
            await asyncio.sleep(0)
        return out

    return Method(key="fdatasync", label="os.write + os.fdatasync per event", events=events, block=block), lambda: os.close(fd)


def _sqlite_full_method(path: Path, events: int, texts: list[str]) -> tuple[Method, Callable[[], None]]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")
    conn.execute(SQLITE_TABLE)
    insert = "INSERT INTO events(id, topic, payload, created_at) VALUES (?, ?, ?, ?)"

    async def block(start: int) -> list[int]:
        clock = time.perf_counter_ns
        out = []
        for i in range(start, start + events):
            t0 = clock()
            conn.execute(insert, (f"id-{i}", TOPIC, texts[i % len(texts)], i))
            out.append(clock() - t0)
            await asyncio.sleep(0)
        return out

    return Method(key="sqlite_full", label="sqlite3 INSERT, synchronous=FULL, per event", events=events, block=block), conn.close


async def run(ctx: Context) -> Section:
    started = time.perf_counter()
    rounds = ctx.scale(8, 2)
    writers = 64
    payloads = command_events(2000)
    texts = [serialise(p) for p in payloads]
    records = [t.encode() + b"\n" for t in texts]
    small = ctx.scale(400, 100)
    power = await Outbox(ctx.path("power.db"), durability="power").open()
    power1 = await Outbox(ctx.path("power1.db"), durability="power").open()
    process = await Outbox(ctx.path("process.db")).open()
    fsync, close_fsync = _fdatasync_method(ctx.path("fdatasync.log"), small, records)
    full, close_full = _sqlite_full_method(ctx.path("sqlite-full.db"), small, texts)
    methods = [
        _outbox_method(power, "power64", f'Outbox.append, durability="power", {writers} appenders', writers, writers * ctx.scale(40, 10), payloads),
        _outbox_method(power1, "power1", 'Outbox.append, durability="power", 1 appender', 1, small, payloads),
        fsync,
        full,
        _outbox_method(process, "process1", 'Outbox.append, durability="process", 1 appender (no fsync)', 1, ctx.scale(4000, 1000), payloads),
    ]
    rates: dict[str, list[float]] = {m.key: [] for m in methods}
    samples: dict[str, list[int]] = {m.key: [] for m in methods}
    offsets = {m.key: m.events for m in methods}
    try:
        for m in methods:  # warm-up, untimed: file creation and first WAL growth are not the topic
            await m.block(0)
        for r in range(rounds):
            order = methods[r % len(methods):] + methods[: r % len(methods)]
            for m in order:
                with gc_frozen():
                    t0 = time.perf_counter()
                    got = await m.block(offsets[m.key])
                    elapsed = time.perf_counter() - t0
                offsets[m.key] += m.events
                rates[m.key].append(len(got) / elapsed)
                samples[m.key].extend(got)
            ctx.log(f"  round {r + 1}/{rounds}: " + ", ".join(f"{k} {v[-1]:,.0f}/s" for k, v in rates.items()))
    finally:
        for ob in (power, power1, process):
            await ob.close()
        close_fsync()
        close_full()

    labels = {m.key: m.label for m in methods}
    rows = []
    for key, label in labels.items():
        s = summarize(samples[key])
        rows.append([
            f"**{label}**" if key == "power64" else label,
            f"{median(rates[key]):,.0f}",
            fmt_range(rates[key], lambda x: f"{x:,.0f}"),
            fmt_ratio(median([a / b for a, b in zip(rates[key], rates["fdatasync"])])),
            fmt_us(s.p50),
            fmt_us(s.p99),
        ])
    section = Section(
        name="power",
        title='durability="power": group commit throughput',
        intro=(
            f"{rounds} rounds; in each, every method records a block of events (order rotating) and "
            "its rate is events per second over the block. Durable against power loss: the outbox "
            'in power mode (SQLite `synchronous=FULL`; concurrent appends share one transaction and '
            "one fsync), a plain append-only file with `fdatasync` after each record, and one SQLite "
            "INSERT per event with `synchronous=FULL`. Latency is per append as its caller saw it, "
            "pooled over all rounds."
        ),
    )
    section.tables.append(Table(
        title="Durable events per second",
        headers=["method", "events/s", "spread over rounds", "vs fdatasync per event (same round)", "append p50", "append p99"],
        rows=rows,
        note=f"One fdatasync took {fmt_us(summarize(samples['fdatasync']).p50)} at the median and "
             f"{fmt_us(summarize(samples['fdatasync']).p99)} at p99 here: a virtual disk shared with "
             "other people's work, so rates swing from round to round; compare within a round's "
             "ratios rather than across runs. The slower each fsync, the more sharing one pays.",
    ))
    section.charts.append(Chart(
        filename="bench-power-throughput.png",
        title="Durable events per second (median over rounds, bars show the spread)",
        kind="bars",
        data={
            "unit": "events/s",
            "categories": [SHORT[k] for k in labels],
            "series": [{
                "label": "events/s",
                "values": [median(rates[k]) for k in labels],
                "low": [min(rates[k]) for k in labels],
                "high": [max(rates[k]) for k in labels],
            }],
            "log": True,
        },
    ))
    def paired(a: str, b: str) -> float:
        return median([x / y for x, y in zip(rates[a], rates[b])])

    section.notes.append(
        f"Sharing: 64 concurrent appenders reach {fmt_ratio(paired('power64', 'power1'))} the rate of one "
        f"appender in power mode, and {fmt_ratio(paired('power64', 'sqlite_full'))} that of one "
        "synchronous=FULL INSERT per event. A lone appender has nobody to share an fsync with and "
        "also pays the hop to the writer thread, so it runs at "
        f"{fmt_ratio(paired('power1', 'sqlite_full'))} of the plain per-event INSERT."
    )
    section.raw = {"rates": rates, "labels": labels}
    section.seconds = time.perf_counter() - started
    return section
