"""The nesting limit is the outbox's own check: the same on every Python, whatever the caller's stack.

Python 3.13's C encoder no longer raises ``RecursionError`` on deep input, and a payload a few
hundred levels short of that was accepted everywhere, then stalled the shipper's decode. So
append refuses past ``MAX_DEPTH``, accepts up to it even from deep in the caller's own stack,
and a deep event already in a file (written by an older release) becomes a dead letter instead
of a retry loop.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from outbox import Outbox, OutboxReader, PayloadError
from outbox.payload import MAX_DEPTH
from shipper import Shipper


def nested(depth: int) -> dict[str, Any]:
    """A payload whose deepest value sits ``depth`` containers down (the payload itself is 1)."""
    value: Any = 0
    for _ in range(depth - 1):
        value = [value]
    return {"a": value}


@pytest.mark.parametrize("depth", [MAX_DEPTH + 1, 980, 5000, 100_000])
async def test_past_the_limit_is_refused_on_every_python(outbox_path: Path, depth: int) -> None:
    async with Outbox(outbox_path) as ob:
        with pytest.raises(PayloadError, match=f"more than {MAX_DEPTH} levels"):
            await ob.append("t", nested(depth))
        good = await ob.append("t", {"ok": True})
    async with OutboxReader(outbox_path) as reader:
        assert [e.id for e in await reader.read_pending(10)] == [good]


async def test_at_the_limit_is_accepted_from_deep_in_the_callers_stack(outbox_path: Path) -> None:
    payload = nested(MAX_DEPTH)
    async with Outbox(outbox_path) as ob:

        async def deep(n: int) -> str:  # the caller is itself most of the way to the recursion limit
            return await deep(n - 1) if n else await ob.append("t", payload)

        event_id = await deep(sys.getrecursionlimit() - 60)
    async with OutboxReader(outbox_path) as reader:
        (event,) = await reader.read_pending(10)
    assert event.id == event_id and json.loads(event.payload) == payload


async def test_a_deep_event_already_in_the_file_is_a_dead_letter_not_a_stall(outbox_path: Path, pg_dsn: str) -> None:
    """An older release let a 980-deep payload in; the shipper's decode of it raised RecursionError,
    taken for a transient failure: 0 of 101 shipped. Now it is set aside and the rest ship. (50,000
    deep here: 3.13's decoder takes 980 levels, but no Python's takes this many.)"""
    async with Outbox(outbox_path) as ob:
        first = await ob.append("command_calls", {"discord_uid": 1, "command": "ping"})
    conn = sqlite3.connect(outbox_path)  # as the older release wrote it
    with conn:
        conn.execute(
            "INSERT INTO events(id, topic, payload, created_at) VALUES"
            " ('0190d1a0-0000-7000-8000-000000000001', 'command_calls', ?, 1)",
            ('{"discord_uid":2,"command":"x","options":{"a":' + "[" * 50_000 + "0" + "]" * 50_000 + "}}",),
        )
    conn.close()
    async with Outbox(outbox_path) as ob:
        rest = [await ob.append("command_calls", {"discord_uid": 3, "command": f"c{i}"}) for i in range(100)]
    async with Shipper(outbox_path, pg_dsn) as s:
        shipped = await asyncio.wait_for(s.drain(), 60)
    assert shipped == 101 and s.stats.dead == 1, s.stats
    async with OutboxReader(outbox_path) as reader:
        dead = await reader.dead_letters()
    assert [d.id for d in dead] == ["0190d1a0-0000-7000-8000-000000000001"]
    assert first not in {d.id for d in dead} and len(rest) == 100
