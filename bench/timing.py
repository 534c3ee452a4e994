"""Timing on a noisy shared machine: per-call samples, interleaved blocks, medians of repeats.

Two cores are shared with other people's test runs, so a method measured alone for ten seconds
and then its rival for the next ten would be comparing two different machines. Instead every
method runs in short blocks, the blocks alternate (and their order rotates), the garbage
collector is frozen and disabled while a block is timed, and the figures are taken per repeat so
their spread can be shown next to the median.
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = [
    "LatencyMethod",
    "Summary",
    "summarize",
    "distribution",
    "gc_frozen",
    "interleaved",
    "median",
    "fmt_us",
    "fmt_ratio",
    "fmt_range",
    "percentile",
]

DIST_POINTS = (1.0, 5.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9)


def percentile(ordered: Sequence[float], q: float) -> float:
    """Return the ``q``-th percentile (0-100) of already sorted samples, interpolating linearly."""
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True, kw_only=True)
class Summary:
    """Latency figures of one sample set, in microseconds."""

    n: int
    p50: float
    p90: float
    p99: float
    p999: float
    max: float
    mean: float


def summarize(samples_ns: Sequence[int]) -> Summary:
    """Summarise per-call samples taken in nanoseconds, as microseconds."""
    ordered = sorted(samples_ns)
    us = 1000.0
    return Summary(
        n=len(ordered),
        p50=percentile(ordered, 50) / us,
        p90=percentile(ordered, 90) / us,
        p99=percentile(ordered, 99) / us,
        p999=percentile(ordered, 99.9) / us,
        max=(ordered[-1] / us) if ordered else float("nan"),
        mean=(sum(ordered) / len(ordered) / us) if ordered else float("nan"),
    )


def distribution(samples_ns: Sequence[int]) -> dict[str, float]:
    """Return the percentiles a latency chart draws, in microseconds, keyed ``"p50"`` etc."""
    ordered = sorted(samples_ns)
    out = {f"p{q:g}": percentile(ordered, q) / 1000.0 for q in DIST_POINTS}
    out["max"] = ordered[-1] / 1000.0 if ordered else float("nan")
    return out


@contextmanager
def gc_frozen() -> Iterator[None]:
    """Collect, freeze what survives, and keep the collector off while the block runs."""
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


@dataclass(frozen=True, kw_only=True)
class LatencyMethod:
    """One way of recording an event, timed call by call.

    ``call(i)`` records event number ``i``; it returns an awaitable when ``is_async``. The caller
    yields to the event loop once after each call, untimed, as a bot does between commands.
    ``after_block`` runs untimed after each block (to drain fire-and-forget work, say), so no
    method's leftovers land in another method's timings.
    """

    key: str
    label: str
    call: Callable[[int], object]
    is_async: bool
    after_block: Callable[[], Awaitable[None]] | None = None


async def _block(method: LatencyMethod, start: int, n: int) -> list[int]:
    out: list[int] = []
    append = out.append
    clock = time.perf_counter_ns
    call = method.call
    sleep = asyncio.sleep
    with gc_frozen():
        if method.is_async:
            for i in range(start, start + n):
                t0 = clock()
                await call(i)  # type: ignore[misc]
                t1 = clock()
                append(t1 - t0)
                await sleep(0)
        else:
            for i in range(start, start + n):
                t0 = clock()
                call(i)
                t1 = clock()
                append(t1 - t0)
                await sleep(0)
    if method.after_block is not None:
        await method.after_block()
    return out


async def interleaved(
    methods: Sequence[LatencyMethod],
    *,
    repeats: int,
    rounds: int,
    block: int,
    log: Callable[[str], None] = lambda _: None,
) -> dict[str, list[list[int]]]:
    """Time every method in alternating blocks; return ``{key: [samples of each repeat]}``.

    Each repeat runs ``rounds`` rounds; each round runs one block of ``block`` calls of every
    method, in an order that rotates from round to round. Event numbers keep counting across
    blocks, so method ``m`` sees events ``0 .. repeats*rounds*block - 1`` exactly once.
    """
    samples: dict[str, list[list[int]]] = {m.key: [] for m in methods}
    next_event = dict.fromkeys(samples, 0)
    turn = 0
    for r in range(repeats):
        for m in methods:
            samples[m.key].append([])
        for _ in range(rounds):
            k = turn % len(methods)
            turn += 1
            for m in [*methods[k:], *methods[:k]]:
                samples[m.key][r].extend(await _block(m, next_event[m.key], block))
                next_event[m.key] += block
        log(
            f"  repeat {r + 1}/{repeats}: "
            + ", ".join(f"{m.key} p50 {summarize(samples[m.key][r]).p50:.0f}us" for m in methods)
        )
    return samples


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def fmt_us(us: float) -> str:
    """Format microseconds for a table: ``23.4 us``, ``1.25 ms``."""
    if us != us:  # NaN
        return "n/a"
    if us >= 10_000:
        return f"{us / 1000:.0f} ms"
    if us >= 1000:
        return f"{us / 1000:.2f} ms"
    if us >= 100:
        return f"{us:.0f} us"
    return f"{us:.1f} us"


def fmt_ratio(x: float) -> str:
    if x != x:
        return "n/a"
    return f"{x:.2f}x" if x < 10 else f"{x:.0f}x"


def fmt_range(values: Sequence[float], fmt: Callable[[float], str] = fmt_us) -> str:
    """Format the spread of per-repeat figures as ``min - max``."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(min(values))} - {fmt(max(values))}"
