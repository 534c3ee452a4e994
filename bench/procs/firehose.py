"""Record command events as fast as asked and acknowledge each one: the kill -9 victim.

Usage: ``python -m bench.procs.firehose MODE TARGET RATE [DELAY]``

``MODE`` is ``create_task`` (fire-and-forget ``asyncpg`` INSERTs into table ``loss_events`` of
the database ``TARGET``, a DSN) or ``outbox`` (``Outbox.append`` to the file ``TARGET``).
``RATE`` is events per second, ``0`` for as fast as the event loop allows. ``DELAY`` (seconds,
``create_task`` only) holds each INSERT that long in the server, standing in for a distant
Postgres (``pg_sleep`` inside the statement keeps the connection busy as a round trip would).
Prints ``ready``,
then the number of each event once the command that recorded it has returned -- what a bot
would have answered the user by then -- one line each, unbuffered, so the parent knows exactly
which events were acknowledged when it kills this process.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from typing import Any

from outbox import Outbox

from ..workload import TOPIC, command_events, serialise

INSERT = "INSERT INTO loss_events(i, payload) VALUES ($1, $2)"
SLOW_INSERT = "INSERT INTO loss_events(i, payload) SELECT $1, $2 FROM pg_sleep($3)"


async def _paced(rate: float, i: int, start: float) -> None:
    if rate <= 0:
        await asyncio.sleep(0)
        return
    delay = start + i / rate - time.monotonic()
    await asyncio.sleep(delay if delay > 0 else 0)


async def fire_and_forget(dsn: str, rate: float, delay: float) -> None:
    import asyncpg

    events = [serialise(e) for e in command_events(1000)]
    pool: Any = await asyncpg.create_pool(dsn, min_size=10, max_size=10)
    pending: set[asyncio.Task[Any]] = set()
    os.write(1, b"ready\n")
    start = time.monotonic()
    i = 0
    while True:
        if delay:
            insert = pool.execute(SLOW_INSERT, i, events[i % 1000], delay)
        else:
            insert = pool.execute(INSERT, i, events[i % 1000])
        task = asyncio.create_task(insert)
        pending.add(task)
        task.add_done_callback(pending.discard)
        os.write(1, b"%d\n" % i)
        i += 1
        await _paced(rate, i, start)


async def durable(path: str, rate: float) -> None:
    events = command_events(1000)
    async with Outbox(path) as ob:
        os.write(1, b"ready\n")
        start = time.monotonic()
        i = 0
        while True:
            await ob.append(TOPIC, {**events[i % 1000], "i": i})
            os.write(1, b"%d\n" % i)
            i += 1
            await _paced(rate, i, start)


def main(argv: list[str]) -> None:
    mode, target, rate = argv[0], argv[1], float(argv[2])
    delay = float(argv[3]) if len(argv) > 3 else 0.0
    asyncio.run(fire_and_forget(target, rate, delay) if mode == "create_task" else durable(target, rate))


if __name__ == "__main__":
    main(sys.argv[1:])
