"""Create and upgrade the Postgres tables the shipper writes, idempotently and versioned.

The steps run in order inside one transaction holding an advisory lock, so two shippers starting
together cannot interleave. Each step must be idempotent (``IF NOT EXISTS``): all of them run on
every migrate, which repairs a table dropped by hand (and columns dropped by hand); the versions
applied are recorded in ``outbox_schema_version``, and a database newer than this release is refused.
"""

from __future__ import annotations

import logging

import asyncpg

from .dsn import connect
from .errors import SchemaError, ShipperError

__all__ = ["migrate", "ensure_schema", "SCHEMA_VERSION", "EVENT_TABLE", "COMMAND_TABLE", "LEDGER_TABLE"]

EVENT_TABLE = "outbox_events"
COMMAND_TABLE = "command_calls"
LEDGER_TABLE = "outbox_ledger"

log = logging.getLogger(__name__)
_LOCK_KEY = 0x4F42_5831_0001  # advisory lock: "OBX1" + 1

_STEPS: list[str] = [
    # 1: the tables of the contract, and the ledger that makes plain COPY exactly-once
    """
    CREATE TABLE IF NOT EXISTS outbox_events (
        id uuid PRIMARY KEY,
        topic text NOT NULL,
        payload jsonb NOT NULL,
        created_at timestamptz NOT NULL,
        shipped_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS command_calls (
        id uuid PRIMARY KEY,
        discord_uid bigint NOT NULL,
        player_name text,
        command text NOT NULL,
        guild_id bigint,
        channel_id bigint,
        options jsonb,
        outcome text,
        latency_ms double precision,
        created_at timestamptz NOT NULL,
        shipped_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE TABLE IF NOT EXISTS outbox_ledger (
        outbox_id uuid NOT NULL,
        after_seq bigint NOT NULL,
        last_seq bigint NOT NULL,
        rows integer NOT NULL,
        shipped_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (outbox_id, after_seq)
    );
    """,
    # 2: which kind of interaction a command row is, and which bot it came from (nullable: older
    # rows have neither). The catalog is read first: a table that has them takes no ALTER lock.
    """
    DO $$
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'command_calls'::regclass
                       AND attname = 'kind' AND NOT attisdropped) THEN
            ALTER TABLE command_calls ADD COLUMN kind text;
        END IF;
        IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'command_calls'::regclass
                       AND attname = 'application_id' AND NOT attisdropped) THEN
            ALTER TABLE command_calls ADD COLUMN application_id bigint;
        END IF;
    END $$;
    """,
]
SCHEMA_VERSION = len(_STEPS)

# Columns the shipper writes that a hand-made ALTER may have dropped: migrate puts them back,
# nullable (the rows already there have no value to give them). The catalog is read first, so a
# healthy table never waits for the ACCESS EXCLUSIVE lock an ALTER takes.
_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    EVENT_TABLE: (("topic", "text"), ("payload", "jsonb"), ("created_at", "timestamptz")),
    COMMAND_TABLE: (
        ("discord_uid", "bigint"),
        ("player_name", "text"),
        ("command", "text"),
        ("guild_id", "bigint"),
        ("channel_id", "bigint"),
        ("options", "jsonb"),
        ("outcome", "text"),
        ("latency_ms", "double precision"),
        ("created_at", "timestamptz"),
        ("kind", "text"),
        ("application_id", "bigint"),
    ),
}


async def _restore_columns(conn: asyncpg.Connection) -> None:
    for table, columns in _COLUMNS.items():
        present = {
            row[0]
            for row in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped",
                table,
            )
        }
        missing = [(name, kind) for name, kind in columns if name not in present]
        if missing:
            await conn.execute(
                f"ALTER TABLE {table} " + ", ".join(f"ADD COLUMN IF NOT EXISTS {name} {kind}" for name, kind in missing)
            )
            log.warning("put back columns dropped from %s by hand: %s", table, ", ".join(name for name, _ in missing))


async def ensure_schema(conn: asyncpg.Connection, *, partition: str | None = None, move_rows: bool = False) -> int:
    """Bring the schema on ``conn`` up to date; return the version now in place.

    ``partition`` (monthly, weekly, daily): also partition the built-in tables by ``created_at``
    (:mod:`shipper.partitions`); ``move_rows`` lets that move rows already there.
    """
    try:
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS outbox_schema_version ("
                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            current = await conn.fetchval("SELECT coalesce(max(version), 0) FROM outbox_schema_version")
            if current > SCHEMA_VERSION:
                raise SchemaError(
                    f"the database has outbox schema version {current}; this release knows up to"
                    f" {SCHEMA_VERSION}: upgrade the shipper"
                )
            # Every step is idempotent and all of them run each time: a table dropped by hand is
            # put back, not just a version number trusted.
            for version, step in enumerate(_STEPS, 1):
                await conn.execute(step)
                if version > current:
                    await conn.execute("INSERT INTO outbox_schema_version(version) VALUES ($1)", version)
            await _restore_columns(conn)
            if partition is not None:
                from .partitions import partition_tables  # it builds on this module's tables

                await partition_tables(conn, partition, move_rows=move_rows)
            return SCHEMA_VERSION
    except asyncpg.PostgresError as exc:
        raise SchemaError(f"migration failed: {exc}") from None


async def migrate(dsn: str, *, partition: str | None = None, move_rows: bool = False) -> int:
    """Create or upgrade the shipper's tables in the database at ``dsn``; return the version."""
    conn = await connect(dsn)
    try:
        return await ensure_schema(conn, partition=partition, move_rows=move_rows)
    except (OSError, asyncpg.InterfaceError) as exc:
        raise ShipperError(f"migration interrupted: {exc}") from None
    finally:
        await conn.close()
