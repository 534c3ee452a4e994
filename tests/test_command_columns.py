"""``kind`` and ``application_id`` on ``command_calls``: added by migrate to an older table, shipped into."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from outbox import Outbox, OutboxReader
from shipper import SCHEMA_VERSION, Shipper, migrate

ROW = {"discord_uid": 42, "player_name": "Zeke", "command": "accept", "options": {}, "outcome": "ok"}

# command_calls as schema version 1 made it, with a row shipped then
VERSION_1 = """
CREATE TABLE outbox_schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now());
INSERT INTO outbox_schema_version(version) VALUES (1);
CREATE TABLE command_calls (
    id uuid PRIMARY KEY, discord_uid bigint NOT NULL, player_name text, command text NOT NULL,
    guild_id bigint, channel_id bigint, options jsonb, outcome text, latency_ms double precision,
    created_at timestamptz NOT NULL, shipped_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO command_calls(id, discord_uid, command, created_at)
VALUES ('01890000-0000-7000-8000-000000000001', 7, 'leaderboard', now());
"""


async def test_migrate_adds_the_columns_nullable_and_rows_ship_into_them(outbox_path: Path, pg_dsn: str) -> None:
    conn = await asyncpg.connect(pg_dsn)
    try:
        await conn.execute(VERSION_1)
        assert await migrate(pg_dsn) == SCHEMA_VERSION
        assert await migrate(pg_dsn) == SCHEMA_VERSION  # idempotent
        columns = {
            r["column_name"]: (r["data_type"], r["is_nullable"])
            for r in await conn.fetch(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_name = 'command_calls'"
            )
        }
        assert columns["kind"] == ("text", "YES") and columns["application_id"] == ("bigint", "YES")
        async with Outbox(outbox_path) as ob:
            button = await ob.append("command_calls", {**ROW, "kind": "component", "application_id": "1100000000000000001"})
            older = await ob.append("command_calls", ROW)  # from a bot logging before the columns existed
            bad = await ob.append("command_calls", {**ROW, "kind": "slash", "application_id": 2**64})
        async with Shipper(outbox_path, pg_dsn) as s:
            await s.drain(timeout=30)
        rows = {r["id"]: (r["kind"], r["application_id"]) for r in await conn.fetch("SELECT id::text, kind, application_id FROM command_calls")}
    finally:
        await conn.close()
    assert rows[button] == ("component", 1100000000000000001)
    assert rows[older] == (None, None)
    assert rows["01890000-0000-7000-8000-000000000001"] == (None, None)  # the row shipped before the upgrade stays
    assert bad not in rows
    async with OutboxReader(outbox_path) as reader:
        (dead,) = await reader.dead_letters()
    assert dead.id == bad and "application_id" in dead.error and "bigint" in dead.error
