"""One ingredient of a draining sidecar at a time, for as long as asked: what slows an appender?

Usage: ``python -m bench.procs.disturb MODE SECONDS [PATH | DSN]``

``read PATH``
    Reads the outbox batch after batch (1,000 events, ``OutboxReader.read_pending``, round and
    round), as a sidecar's reads do; no Postgres.
``copy DSN``
    Sends fresh command-like rows to Postgres with ``copy_records_to_table`` in 1,000-row batches
    (one transaction each) into ``raw_copy_events``, as a sidecar's COPYs do; no SQLite.
``burn``
    Spins the CPU in pure Python; no I/O at all.

Prints ``ready``, waits for ``go``, runs for SECONDS, prints a JSON line with what it did.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
import uuid
from datetime import datetime, timezone
from typing import Any

import asyncpg

from outbox import OutboxReader

from ..backlog import PLAIN_TOPIC
from ..workload import command_events, serialise


async def _go() -> None:
    print("ready", flush=True)
    if (await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)).strip() != "go":
        raise SystemExit("no go")


async def read(path: str, seconds: float) -> dict[str, Any]:
    n = 0
    async with OutboxReader(path) as reader:
        await _go()
        deadline = time.monotonic() + seconds
        after = 0
        while time.monotonic() < deadline:
            events = await reader.read_pending(1000, after=after)
            n += len(events)
            after = events[-1].seq if events else 0
    return {"read": n}


async def copy(dsn: str, seconds: float) -> dict[str, Any]:
    texts = [serialise(e) for e in command_events(1000, seed=5)]
    conn = await asyncpg.connect(dsn)
    n = 0
    try:
        await _go()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            now = datetime.now(timezone.utc)
            rows = [(uuid.uuid4(), PLAIN_TOPIC, t, now) for t in texts]
            await conn.copy_records_to_table(
                "raw_copy_events", records=rows, columns=("id", "topic", "payload", "created_at")
            )
            n += len(rows)
    finally:
        await conn.close()
    return {"copied": n}


async def burn(seconds: float) -> dict[str, Any]:
    await _go()
    deadline = time.monotonic() + seconds
    spins = 0
    while time.monotonic() < deadline:
        spins += 1
    return {"spins": spins}


def main(argv: list[str]) -> None:
    mode, seconds = argv[0], float(argv[1])
    if mode == "read":
        report = asyncio.run(read(argv[2], seconds))
    elif mode == "copy":
        report = asyncio.run(copy(argv[2], seconds))
    else:
        report = asyncio.run(burn(seconds))
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
