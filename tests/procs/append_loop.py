"""Append events in a loop and print each acknowledged id: the crash tests' victim.

Usage: python append_loop.py PATH [TOPIC] [DURABILITY]. Prints "ready" first, then one id a line,
each flushed only after ``append`` returned, so every printed id was acknowledged.
"""

from __future__ import annotations

import asyncio
import os
import sys

from outbox import Outbox


async def main(path: str, topic: str, durability: str) -> None:
    async with Outbox(path, durability=durability) as ob:  # type: ignore[arg-type]
        out = sys.stdout
        out.write("ready\n")
        out.flush()
        i = 0
        while True:
            event_id = await ob.append(topic, {"pid": os.getpid(), "i": i, "pad": "x" * 150})
            out.write(event_id + "\n")
            out.flush()
            i += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "t", sys.argv[3] if len(sys.argv) > 3 else "process"))
