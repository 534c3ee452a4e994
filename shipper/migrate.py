"""Create and upgrade the Postgres tables the shipper writes, idempotently and versioned.

Every start first reads the catalog, in one round trip (:func:`is_current`): when the tables are
current nothing else runs, so a role with only DML rights (hosted Postgres, after the owner ran
``shipper migrate``) never issues DDL and never waits on a lock here. Otherwise the steps run in
order inside one transaction holding an advisory lock (waited for at most ``lock_timeout_s``), so
two shippers starting together cannot interleave. Each step must be idempotent (``IF NOT
EXISTS``): all of them run on every migrate, which repairs a table dropped by hand (and columns
dropped by hand); the versions applied are recorded in ``outbox_schema_version``, and a database
newer than this release is refused. Tables go in the schema named (``public`` by default): the
migration sets ``search_path`` to it for its own transaction only.
"""

from __future__ import annotations

import logging

import asyncpg

from .catalog import literal as _literal
from .connection import connect, quote_ident
from .errors import LEASE_LOST_STATE, GrantError, SchemaError, ShipperError, grant_for

__all__ = [
    "migrate",
    "ensure_schema",
    "is_current",
    "SCHEMA_VERSION",
    "EVENT_TABLE",
    "COMMAND_TABLE",
    "LEDGER_TABLE",
    "LEASE_TABLE",
    "VERSION_TABLE",
    "FENCE_FUNCTION",
    "DEFAULT_SCHEMA",
]

EVENT_TABLE = "outbox_events"
COMMAND_TABLE = "command_calls"
LEDGER_TABLE = "outbox_ledger"
LEASE_TABLE = "outbox_lease"
VERSION_TABLE = "outbox_schema_version"
FENCE_FUNCTION = "outbox_fence"
DEFAULT_SCHEMA = "public"

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
    # 3: the lease (a row that expires, not a session lock: poolers share sessions) and the fence
    # each batch transaction calls first, which fails it with its own SQLSTATE when the caller
    # no longer holds the lease. FOR SHARE: a takeover waits for a batch in flight to end.
    f"""
    CREATE TABLE IF NOT EXISTS outbox_lease (
        outbox_id uuid PRIMARY KEY,
        holder text NOT NULL,
        epoch bigint NOT NULL DEFAULT 1,
        expires_at timestamptz NOT NULL,
        taken_at timestamptz NOT NULL DEFAULT now()
    );
    CREATE OR REPLACE FUNCTION outbox_fence(p_outbox uuid, p_holder text) RETURNS void
    LANGUAGE plpgsql SET search_path FROM CURRENT AS $$
    BEGIN
        PERFORM 1 FROM outbox_lease
         WHERE outbox_id = p_outbox AND holder = p_holder AND expires_at > now() FOR SHARE;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'this shipper no longer holds the lease on outbox %', p_outbox
                USING ERRCODE = '{LEASE_LOST_STATE}';
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


# Columns each table must have for the catalog check (the restorable ones above, plus keys).
_REQUIRED: dict[str, tuple[str, ...]] = {
    **{table: ("id",) + tuple(name for name, _ in columns) for table, columns in _COLUMNS.items()},
    LEDGER_TABLE: ("outbox_id", "after_seq", "last_seq", "rows"),
    LEASE_TABLE: ("outbox_id", "holder", "epoch", "expires_at"),
    VERSION_TABLE: ("version",),
}


def _current_query(schema: str) -> tuple[str, int]:
    """One simple query whose row count says whether ``schema`` is current, and that count."""
    pairs = [(t, c) for t, cols in _REQUIRED.items() for c in cols]
    values = ", ".join(f"({_literal(quote_ident(schema) + '.' + quote_ident(t))}, {_literal(c)})" for t, c in pairs)
    query = (
        f"SELECT 1 FROM (VALUES {values}) AS e(t, c) JOIN pg_attribute a"
        " ON a.attrelid = to_regclass(e.t) AND a.attname = e.c AND NOT a.attisdropped"
        " UNION ALL SELECT 1 FROM pg_proc"
        f" WHERE proname = {_literal(FENCE_FUNCTION)} AND pronamespace = to_regnamespace({_literal(quote_ident(schema))})"
        f" UNION ALL SELECT 1 FROM {quote_ident(schema)}.{VERSION_TABLE} HAVING max(version) = {SCHEMA_VERSION}"
    )
    return query, len(pairs) + 2


async def is_current(conn: asyncpg.Connection, schema: str = DEFAULT_SCHEMA) -> bool:
    """True if every table, column and function of this release is in ``schema``: one round trip.

    A simple query (no statement to prepare) whose row count is the answer; any error (a table
    or the schema missing, no SELECT on the version table) means "not known current".
    """
    query, expected = _current_query(schema)
    try:
        status = await conn.execute(query)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise GrantError(f"{exc}: {grant_for(str(exc))}") from None
    except asyncpg.PostgresError:
        return False
    return bool(status == f"SELECT {expected}")


def current_sql(schema: str = DEFAULT_SCHEMA) -> str:
    """:func:`is_current`'s check as a boolean SQL expression, for a sink to fold into its start-up
    read (which then fails, as :func:`is_current` would answer False, on a missing table)."""
    query, expected = _current_query(schema)
    return f"(SELECT count(*) = {expected} FROM ({query}) AS current)"


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


async def _check_may_create(conn: asyncpg.Connection, schema: str) -> None:
    """Raise one clear line when something is missing that this role may not create."""
    row = await conn.fetchrow(
        "SELECT to_regnamespace($1) IS NOT NULL AS present,"
        " CASE WHEN to_regnamespace($1) IS NULL THEN has_database_privilege(current_database(), 'CREATE')"
        " ELSE has_schema_privilege(to_regnamespace($1), 'CREATE') END AS may, current_user AS who",
        quote_ident(schema),
    )
    if row["may"]:
        return
    if not row["present"]:
        raise GrantError(
            f"schema {schema} does not exist and role {row['who']} may not create it:"
            f" run `shipper migrate --schema {schema}` as the database owner"
        )
    quoted = {f"{quote_ident(schema)}.{quote_ident(t)}": f"{schema}.{t}" for t in _REQUIRED}
    rows = await conn.fetch("SELECT t FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NULL", list(quoted))
    missing = [quoted[r[0]] for r in rows]
    what = f"table {missing[0]} is missing" if missing else f"the tables in schema {schema} are out of date"
    raise GrantError(
        f"{what} and role {row['who']} may not run DDL there:"
        f" run `shipper migrate --schema {schema}` as the owner of the schema"
    )


async def ensure_schema(
    conn: asyncpg.Connection,
    schema: str = DEFAULT_SCHEMA,
    *,
    lock_timeout_s: float = 10.0,
    check_first: bool = True,
    partition: str | None = None,
    move_rows: bool = False,
) -> int:
    """Bring ``schema`` on ``conn`` up to date; return the version now in place.

    With ``check_first`` a current schema costs one round trip and no DDL; every wait on a lock
    is bounded by ``lock_timeout_s`` (a frozen migrator elsewhere then costs a retry, not a hang).
    ``partition`` (monthly, weekly, daily): also partition the built-in tables by ``created_at``
    (:mod:`shipper.partitions`); ``move_rows`` lets that move rows already there.
    """
    if check_first and partition is None and await is_current(conn, schema):
        return SCHEMA_VERSION
    try:
        await _check_may_create(conn, schema)
        if await conn.fetchval("SELECT to_regnamespace($1) IS NULL", quote_ident(schema)):
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}")
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {max(1, int(lock_timeout_s * 1000))}")
            await conn.execute(f"SET LOCAL search_path = {quote_ident(schema)}")
            await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _LOCK_KEY >> 32, schema)
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
    except asyncpg.LockNotAvailableError:
        raise ShipperError(
            f"migration of schema {schema} waited {lock_timeout_s:g} s for another migration's lock; will retry"
        ) from None
    except asyncpg.InsufficientPrivilegeError as exc:
        raise GrantError(f"migration of schema {schema} failed: {exc}; run `shipper migrate` as the owner") from None
    except asyncpg.PostgresError as exc:
        raise SchemaError(f"migration failed: {exc}") from None


async def migrate(
    dsn: str,
    *,
    schema: str = DEFAULT_SCHEMA,
    lock_timeout_s: float = 10.0,
    partition: str | None = None,
    move_rows: bool = False,
) -> int:
    """Create or upgrade the shipper's tables in ``schema`` of the database at ``dsn``; return the version."""
    conn = await connect(dsn)
    try:
        return await ensure_schema(
            conn, schema, lock_timeout_s=lock_timeout_s, check_first=False, partition=partition, move_rows=move_rows
        )
    except (OSError, asyncpg.InterfaceError) as exc:
        raise ShipperError(f"migration interrupted: {exc}") from None
    finally:
        await conn.close()
