"""Copy an outbox's WAL back into its file, over and over, until killed.

Usage: python torture_checkpoint.py PATH READY. Creates READY once the outbox is open, then runs
``outbox.maintenance.checkpoint(truncate=True)`` (the operator's full checkpoint) in a loop.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from outbox import OutboxReader
from outbox.maintenance import checkpoint


async def main(path: str, ready: str) -> None:
    async with OutboxReader(path) as reader:
        Path(ready).touch()
        while True:
            await checkpoint(reader, truncate=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
