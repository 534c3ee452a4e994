"""Batch sizes: grown while a backlog waits, as far as the transaction's fixed cost calls for.

The rule (shipper.batching.next_limit) is checked as a function; the behaviour end to end through
a proxy that holds each message 25 ms (a Postgres 50 ms away), where batches must grow, and the
shipper's own measure of a transaction's fixed cost (the lease's round trips) must see the delay.
Nothing here is timed: the proxy makes the distance, the assertions count batches and rows.
"""

from __future__ import annotations

from pathlib import Path

import asyncpg

from delayproxy import DelayProxy
from outbox import Outbox
from shipper import Shipper, migrate
from shipper.batching import TRIP_SHARE, next_limit

MiB = 1 << 20


def test_a_short_batch_or_growth_off_means_batch_size() -> None:
    assert next_limit(1000, 999, 250_000, batch_size=1000, max_bytes=8 * MiB, trip_s=0.1) == 1000
    assert next_limit(1000, 1000, 250_000, batch_size=1000, max_bytes=0, trip_s=0.1) == 1000


def test_batches_grow_until_the_fixed_cost_is_a_small_share() -> None:
    common = {"batch_size": 1000, "max_bytes": 8 * MiB, "per_event_s": 4e-6}
    near = next_limit(1000, 1000, 250_000, trip_s=0.0005, **common)  # loopback: half a millisecond
    far = next_limit(1000, 1000, 250_000, trip_s=0.1, **common)  # 100 ms away
    cap = 8 * MiB // 250
    assert far == cap  # the byte cap binds long before the round trip is 5% of a batch
    assert 1000 < near < cap // 4
    assert abs(0.0005 / (near * 4e-6) - TRIP_SHARE) < 0.01  # the fixed part is about TRIP_SHARE
    # never below batch_size, whatever is measured
    assert next_limit(1000, 1000, 250_000, trip_s=0.0, **common) == 1000
    assert next_limit(1000, 1000, 250_000, trip_s=0.0005, batch_size=1000, max_bytes=8 * MiB, per_event_s=1.0) == 1000
    # more distance, never smaller batches
    sizes = [next_limit(1000, 1000, 250_000, trip_s=t, **common) for t in (0.0001, 0.001, 0.01, 0.05, 0.2)]
    assert sizes == sorted(sizes)


def test_without_a_measured_trip_batches_grow_to_the_byte_cap() -> None:
    """A sink that has no lease (nothing timed): as before, the cap."""
    assert next_limit(1000, 1000, 250_000, batch_size=1000, max_bytes=8 * MiB) == 8 * MiB // 250


async def test_a_distant_postgres_gets_few_big_batches_and_every_event_once(outbox_path: Path, pg_dsn: str) -> None:
    await migrate(pg_dsn)
    n = 12_000
    async with Outbox(outbox_path) as ob:
        for i in range(n):
            await ob.append("clicks", {"i": i, "pad": "x" * 100})
    async with DelayProxy(pg_dsn, delay=0.025) as proxy:
        async with Shipper(outbox_path, proxy.dsn(), batch_size=500, flush_interval=0.05) as shipper:
            assert await shipper.drain(timeout=120) == n
            trip = shipper._lease.trip_s
            batches = shipper.stats.batches
    assert trip is not None and trip >= 0.05  # the lease's round trips saw the distance
    # 24 at a fixed 500; growth makes the second batch hold the rest (500 + 11,500)
    assert batches <= 4, batches
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT (payload->>'i')::int AS i, count(*) AS c FROM outbox_events GROUP BY 1")
    finally:
        await conn.close()
    assert len(rows) == n and all(r["c"] == 1 for r in rows)
