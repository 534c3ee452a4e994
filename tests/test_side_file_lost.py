"""A deleted ``-ship`` side file: its dead letters are found again, not counted as shipped.

The side file holds the cursor and the dead letters. Deleted, a new one started at cursor 0;
the shipper then took Postgres's ledger for the truth and jumped to its end, so every dead
letter was silently forgotten and ``outbox status`` counted it as shipped.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from outbox import Outbox, OutboxReader, ship_path
from shipper import Shipper


async def test_dead_letters_are_found_again_after_the_side_file_is_deleted(
    outbox_path: Path, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with Outbox(outbox_path) as ob:
        good = [await ob.append("command_calls", {"discord_uid": i + 1, "command": "ping"}) for i in range(200)]
        bad = await ob.append("command_calls", {"discord_uid": "not a number", "command": "ping"})
        good += [await ob.append("t", {"i": i}) for i in range(200)]
    async with Shipper(outbox_path, pg_dsn) as s:
        await s.drain(timeout=60)
    async with OutboxReader(outbox_path) as reader:
        assert [d.id for d in await reader.dead_letters()] == [bad]
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(f"{ship_path(outbox_path)}{suffix}"):
            os.remove(f"{ship_path(outbox_path)}{suffix}")
    with caplog.at_level(logging.WARNING):
        async with Shipper(outbox_path, pg_dsn) as s:
            await s.drain(timeout=60)
    assert "side file" in caplog.text and "missing" in caplog.text, "say so loudly"
    async with OutboxReader(outbox_path) as reader:
        status = await reader.status()
        dead = await reader.dead_letters()
    assert [d.id for d in dead] == [bad], "the dead letter must be found again"
    assert (status.dead, status.shipped, status.pending) == (1, len(good), 0)
