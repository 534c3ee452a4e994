"""The hand-written baseline for the WAN benchmark: read the outbox, COPY the rows, exit.

Usage: python -m bench.procs.rawcopy PATH DSN BATCH (BATCH 0: every row in one COPY call).
What a user's own script would do, as a whole process: no ledger, no lease, no exactly-once.
Rows go to ``raw_copy_events`` (the same shape as ``outbox_events``).
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg

from outbox import OutboxReader
from shipper.connection import PG_EPOCH_US


async def main(path: str, dsn: str, batch: int) -> None:
    rows = []
    async with OutboxReader(path) as reader:
        async for chunk in reader.iter_events(chunk=10_000):
            rows.extend(e[1:] for e in chunk)
    conn = await asyncpg.connect(dsn)
    await conn.set_type_codec(
        "timestamptz", schema="pg_catalog", encoder=lambda us: (us - PG_EPOCH_US,),
        decoder=lambda t: t[0] + PG_EPOCH_US, format="tuple",
    )
    step = batch or len(rows)
    for i in range(0, len(rows), step):
        await conn.copy_records_to_table(
            "raw_copy_events", records=rows[i : i + step], columns=["id", "topic", "payload", "created_at"]
        )
    await conn.close()
    print(len(rows))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
