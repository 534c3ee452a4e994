"""Commands logged by the bot land in Postgres ``command_calls``, shipped by the in-process shipper."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg

from bot.payloads import option, subcommand, user_option
from discord_harness import ALICE, BOB, CHANNEL_ID, GUILD_ID, dm_of, running_bot
from outbox import OutboxReader
from shipper import Shipper


async def test_every_command_lands_in_command_calls(outbox_path: Path, pg_dsn: str) -> None:
    async with running_bot(outbox_path) as h:
        async with Shipper(outbox_path, pg_dsn, outbox=h.outbox, flush_interval=0.01) as shipper:
            await h.invoke("leaderboard", option("page", 2))
            await h.invoke("queue", subcommand("join", option("mode", "1v1")), player=BOB)
            await h.invoke("termsofservice", where=dm_of(ALICE))
            await h.invoke("setcountry", option("country", "Atlantis"), where=dm_of(ALICE))
            await h.invoke("profile", user_option("user", BOB))
            shipped = await asyncio.wait_for(shipper.drain(timeout=30), 40)
        async with OutboxReader(outbox_path) as reader:
            events = [e for chunk in [c async for c in reader.iter_events(topic="command_calls")] for e in chunk]
    assert shipped == 5 and len(events) == 5

    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            "SELECT id::text, discord_uid, player_name, command, guild_id, channel_id, options::text AS options,"
            " outcome, latency_ms, created_at FROM command_calls ORDER BY created_at, id"
        )
    finally:
        await conn.close()
    assert [r["id"] for r in rows] == [e.id for e in events]  # keyed by the outbox event id
    for row, event in zip(rows, events):
        payload = json.loads(event.payload)
        assert row["discord_uid"] == payload["discord_uid"]
        assert row["player_name"] == payload["player_name"]
        assert row["command"] == payload["command"]
        assert row["guild_id"] == payload["guild_id"] and row["channel_id"] == payload["channel_id"]
        assert json.loads(row["options"]) == payload["options"]
        assert row["outcome"] == payload["outcome"]
        assert row["latency_ms"] == payload["latency_ms"] and row["latency_ms"] > 0
        assert row["created_at"] is not None

    got = [(r["discord_uid"], r["command"], r["guild_id"], json.loads(r["options"]), r["outcome"]) for r in rows]
    assert got == [
        (ALICE.id, "leaderboard", GUILD_ID, {"page": 2}, "ok"),
        (BOB.id, "queue join", GUILD_ID, {"mode": "1v1"}, "check_failure"),
        (ALICE.id, "termsofservice", None, {}, "ok"),
        (ALICE.id, "setcountry", None, {"country": "Atlantis"}, "command_error"),
        (ALICE.id, "profile", GUILD_ID, {"user": BOB.id}, "ok"),
    ]
    assert rows[0]["channel_id"] == CHANNEL_ID and rows[0]["player_name"] == "Ali (captain)"
    assert rows[2]["channel_id"] == dm_of(ALICE).channel_id and rows[2]["player_name"] == "Alice"


async def test_rows_logged_while_the_outbox_failed_are_lost_but_the_rest_ship(outbox_path: Path, pg_dsn: str) -> None:
    """A full outbox drops those rows (and says so); later commands log and ship as usual."""
    async with running_bot(outbox_path, max_bytes=64 * 1024 * 1024) as h:
        async with Shipper(outbox_path, pg_dsn, outbox=h.outbox, flush_interval=0.01) as shipper:
            await h.invoke("leaderboard")
            h.outbox.max_bytes = 1  # the disk budget runs out
            await h.invoke("leaderboard", option("page", 2))
            h.outbox.max_bytes = 64 * 1024 * 1024
            await h.invoke("leaderboard", option("page", 3))
            await asyncio.wait_for(shipper.drain(timeout=30), 40)
        assert h.command_log.stats.failed == 1
    conn = await asyncpg.connect(pg_dsn)
    try:
        pages = [json.loads(r["options"]) for r in await conn.fetch(
            "SELECT options::text AS options FROM command_calls ORDER BY created_at"
        )]  # fmt: skip
    finally:
        await conn.close()
    assert pages == [{}, {"page": 3}]
