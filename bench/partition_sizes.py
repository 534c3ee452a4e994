"""Partition counts and sizes: ship command events spread over months into partitioned tables.

Usage: ``python -m bench.partition_sizes DSN [EVENTS] [MONTHS]`` (a scratch database: it is
migrated with ``--partition monthly``). Imports ``EVENTS`` command-like events spread evenly
over the last ``MONTHS`` months (as ``outbox import`` of an old export would bring them), drains
them with ``Shipper`` and prints, per table, the partitions made and their sizes, then the bytes
per row, for docs/SCALING.md. Not part of ``python -m bench``: a one-off measurement.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from outbox import OutboxReader
from outbox.maintenance import import_records
from shipper import Shipper, migrate

from .workload import command_events


async def main(dsn: str, n: int, months: int) -> None:
    await migrate(dsn, partition="monthly")
    now = datetime.datetime.now(datetime.timezone.utc)
    span = datetime.timedelta(days=30.4 * months)
    payloads = command_events(2000, seed=7)

    async def lines() -> AsyncIterator[tuple[int, str]]:
        for i in range(n):
            moment = now - span + span * (i / n)
            record = {"id": str(uuid.uuid4()), "topic": "command_calls", "payload": payloads[i % 2000], "created_at": moment.isoformat()}
            yield i + 1, json.dumps(record)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.db"
        async with OutboxReader(path, create=True) as reader:
            await import_records(reader, lines())
        t0 = time.perf_counter()
        async with Shipper(path, dsn, retention_s=3650 * 86400) as s:
            await s.drain()
            shipped, dead = s.stats.shipped, s.stats.dead
        seconds = time.perf_counter() - t0
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("VACUUM ANALYZE command_calls")
        rows = await conn.fetch(
            "SELECT c.relname::text AS name, pg_total_relation_size(c.oid) AS total, pg_relation_size(c.oid) AS heap,"
            " (SELECT count(*) FROM pg_inherits WHERE inhparent = c.oid) AS children, c.reltuples::bigint AS est"
            " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'command_calls'::regclass ORDER BY 1"
        )
    finally:
        await conn.close()
    total = sum(r["total"] for r in rows)
    filled = [r for r in rows if r["est"] > 0]
    print(f"shipped {shipped:,} events ({dead} dead) over {months} months in {seconds:.1f} s ({shipped / seconds:,.0f}/s)")
    print(f"command_calls: {len(rows)} partitions, {len(filled)} holding rows, {total / 1e6:.1f} MB in all")
    for r in rows:
        print(f"  {r['name']}  ~{r['est']:,} rows  {r['total'] / 1e6:.1f} MB (heap {r['heap'] / 1e6:.1f} MB)")
    print(f"bytes per row, heap + primary key: {total / max(1, shipped):.0f}")


if __name__ == "__main__":
    args = sys.argv[1:]
    asyncio.run(main(args[0], int(args[1]) if len(args) > 1 else 200_000, int(args[2]) if len(args) > 2 else 6))
