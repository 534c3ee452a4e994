"""Hosted Postgres as users have it: a role with DML rights only, an explicit schema, round trips.

The role test runs directly and through PgBouncer; the round-trip test counts messages at a TCP
proxy (tests/delayproxy.py) instead of timing anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from cli_support import Cli
from delayproxy import DelayProxy
from pgbouncer import PgBouncer
from outbox import Outbox, OutboxReader
from shipper import PostgresSink, SchemaError, Shipper, migrate, replay, verify
from shipper.connection import connect
from shipper.errors import ConnectError, DsnError, GrantError, classify, hint
from shipper.sink import Batch

APP = "outbox_app"  # also listed in tests/pgbouncer.py's users
TABLES = ("outbox_events", "command_calls", "outbox_ledger", "outbox_lease", "outbox_schema_version")
COMMAND = {"discord_uid": 42, "command": "rank", "player_name": "Ada", "outcome": "ok"}


def as_user(dsn: str, user: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{user}@{parts.netloc.rpartition('@')[2]}"))


async def app_role(owner_dsn: str, schema: str, *, grant: bool = True) -> str:
    """A login role with no CREATE anywhere and no TEMP; with ``grant``, only the documented GRANTs."""
    conn = await asyncpg.connect(owner_dsn)
    try:
        db = await conn.fetchval("SELECT current_database()")
        await conn.execute(f"DO $$ BEGIN CREATE ROLE {APP} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$")
        await conn.execute(f'REVOKE ALL ON DATABASE "{db}" FROM PUBLIC')  # no TEMP, no CREATE
        await conn.execute(f'GRANT CONNECT ON DATABASE "{db}" TO {APP}')
        await conn.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(f'GRANT USAGE ON SCHEMA "{schema}" TO {APP}')
        if grant:
            tables = ", ".join(f'"{schema}".{t}' for t in TABLES)
            await conn.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON {tables} TO {APP}")
    finally:
        await conn.close()
    return as_user(owner_dsn, APP)


async def fill(path: Path, n: int) -> list[str]:
    async with Outbox(path) as ob:
        ids = [await ob.append("clicks", {"i": i}) for i in range(n)]
        ids += [await ob.append("command_calls", {**COMMAND, "i": i}) for i in range(5)]
        return ids


async def ids_in(dsn: str, schema: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch(
            f'SELECT id::text FROM "{schema}".outbox_events UNION ALL SELECT id::text FROM "{schema}".command_calls'
        )
        return [r[0] for r in rows]
    finally:
        await conn.close()


async def test_a_dml_only_role_ships_replays_and_verifies_in_its_schema(
    outbox_path: Path, pg_dsn: str, route_dsn: Callable[[str], str]
) -> None:
    await migrate(pg_dsn, schema="bot data")  # the owner, once; a name that needs quoting
    app = route_dsn(await app_role(pg_dsn, "bot data"))
    conn = await asyncpg.connect(as_user(pg_dsn, APP))
    try:  # the premise: this role can create nothing, not even a temporary table
        assert not await conn.fetchval("SELECT has_schema_privilege('bot data', 'CREATE')")
        assert not await conn.fetchval("SELECT has_database_privilege(current_database(), 'TEMP')")
    finally:
        await conn.close()
    expected = await fill(outbox_path, 200)
    async with Shipper(outbox_path, app, schema="bot data", batch_size=50) as s:
        await s.drain(timeout=30)
        assert s.stats.retries == 0, s.stats.last_error
    assert sorted(await ids_in(pg_dsn, "bot data")) == sorted(expected)
    owner = await asyncpg.connect(pg_dsn)
    try:
        assert await owner.fetchval("SELECT to_regclass('public.outbox_events')") is None  # nothing went astray
        await owner.execute("DELETE FROM \"bot data\".outbox_events WHERE id = ANY($1::uuid[])", expected[:20])
    finally:
        await owner.close()
    async with OutboxReader(outbox_path) as reader:
        lost = await verify(reader, app, schema="bot data")
        assert lost.missing == {"clicks": 20}
        done = await replay(reader, app, schema="bot data")  # the careful path: no TEMP table
        assert (done.inserted, done.rejected) == (20, 0)
        assert (await verify(reader, app, schema="bot data")).ok
    assert sorted(await ids_in(pg_dsn, "bot data")) == sorted(expected)


async def test_missing_tables_the_role_may_not_create_say_so_in_one_line(
    outbox_path: Path, pg_dsn: str, subprocess_env: dict[str, str]
) -> None:
    app = await app_role(pg_dsn, "public", grant=False)  # nobody ran `shipper migrate`
    await fill(outbox_path, 3)
    with pytest.raises(GrantError, match=r"table public\.outbox_events is missing .* `shipper migrate"):
        await PostgresSink(app).open()
    shipper = Shipper(outbox_path, app, backoff_base=0.05, backoff_cap=0.2, stop_timeout=1)
    async with shipper:
        for _ in range(100):
            if shipper.stats.last_error:
                break
            await __import__("asyncio").sleep(0.05)
    assert "run `shipper migrate --schema public` as the owner" in (shipper.stats.last_error or "")
    async with OutboxReader(outbox_path) as reader:
        status = await reader.status()
        assert status.pending == 8 and "outbox_events is missing" in (status.last_error or "")
    drained = Cli("script", subprocess_env)("shipper", "drain", "--outbox", str(outbox_path), "--dsn", app)
    drained.assert_one_error_line(4, "outbox_events is missing", "shipper migrate")


async def test_a_missing_grant_is_its_own_kind_and_names_the_grant(outbox_path: Path, pg_dsn: str) -> None:
    await migrate(pg_dsn)
    app = await app_role(pg_dsn, "public")
    conn = await asyncpg.connect(pg_dsn)
    await conn.execute(f"REVOKE INSERT ON public.command_calls FROM {APP}")
    await conn.close()
    await fill(outbox_path, 3)
    shipper = Shipper(outbox_path, app, backoff_base=0.05, backoff_cap=0.2, stop_timeout=1)
    await shipper.start()
    try:
        with pytest.raises(GrantError, match="GRANT SELECT, INSERT, UPDATE, DELETE ON command_calls"):
            await shipper.drain(timeout=20)  # a one-off drain ends instead of retrying for ever
        assert "shipper migrate" not in (shipper.stats.last_error or "")
    finally:
        await shipper.stop()


def test_errors_are_sorted_into_their_kinds() -> None:
    assert classify(asyncpg.InsufficientPrivilegeError("permission denied for table outbox_events")) == "permission"
    assert "GRANT SELECT, INSERT" in hint(asyncpg.InsufficientPrivilegeError("permission denied for table outbox_events"))
    assert "GRANT USAGE ON SCHEMA app" in hint(asyncpg.InsufficientPrivilegeError("permission denied for schema app"))
    duplicate = asyncpg.DuplicatePreparedStatementError('prepared statement "__asyncpg_stmt_1__" already exists')
    assert classify(duplicate) == "pooler" and "shipper migrate" in hint(duplicate)  # "... not fixed by"
    assert "not fixed by `shipper migrate`" in hint(duplicate)
    assert classify(asyncpg.InvalidSQLStatementNameError('prepared statement "x" does not exist')) == "pooler"
    assert classify(SchemaError("gone")) == "schema" and classify(GrantError("no")) == "permission"


@pytest.mark.parametrize("rootcert", ["default", "named"])
async def test_tls_without_a_root_certificate_is_not_called_a_malformed_dsn(
    pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rootcert: str, pgbouncer: PgBouncer
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.postgresql/root.crt
    query = "sslmode=verify-full" + (f"&sslrootcert={tmp_path / 'none.crt'}" if rootcert == "named" else "")
    tcp = pgbouncer.dsn(pg_dsn)  # a TCP endpoint whatever the test server listens on (TLS is not tried on sockets)
    dsn = urlunsplit(urlsplit(tcp)._replace(query=query))
    with pytest.raises(ConnectError) as caught:
        await connect(dsn)
    assert "malformed DSN" not in str(caught.value)
    assert isinstance(caught.value, DsnError) and "TLS set-up" in str(caught.value) and ".crt" in str(caught.value)


async def test_round_trips_are_few_and_counted(outbox_path: Path, pg_dsn: str) -> None:
    """Fixed costs, counted at a proxy: a current schema is one round trip, a batch is one."""
    await migrate(pg_dsn)
    async with OutboxReader(outbox_path, create=True) as reader:
        oid = reader.outbox_id
    async with DelayProxy(pg_dsn) as proxy:
        sink = PostgresSink(proxy.dsn())
        await sink.open()
        opened = proxy.turns  # the start-up handshake, then the catalog check
        proxy.reset()
        assert await sink.try_lease(oid, "t1", 30.0)
        assert proxy.turns == 1
        await fill(outbox_path, 100)
        async with OutboxReader(outbox_path) as reader:
            events = await reader.read_pending(100)
        proxy.reset()
        await sink.send(Batch(oid, 0, events[-1].seq, events[:100], lease="t1"), _nothing)
        assert proxy.turns == 1  # BEGIN; SET LOCAL ..; fence; ledger; COPY; COMMIT: one query
        proxy.reset()
        assert await sink.missing(events) == []
        assert proxy.turns == 1  # verify's check: one query (a COPY) per table, here outbox_events only
        await sink.close()
    # was ~13 (type introspection, CREATE TABLE IF NOT EXISTS x 3, ...), then 7: the handshake (2)
    # and one start-up read (a COPY: the schema check, the routes' columns, the partitions)
    assert opened <= 3, opened


async def test_a_batch_into_partitions_that_are_there_is_one_round_trip(outbox_path: Path, pg_dsn: str) -> None:
    """Partitions.ensure checks a batch's times against the partitions read at start: no query."""
    await migrate(pg_dsn, partition="monthly")
    await fill(outbox_path, 100)
    async with OutboxReader(outbox_path) as reader:
        oid, events = reader.outbox_id, await reader.read_pending(100)
    async with DelayProxy(pg_dsn) as proxy:
        sink = PostgresSink(proxy.dsn())
        await sink.open()
        assert sink.partitions.periods == {"outbox_events": "monthly", "command_calls": "monthly"}
        proxy.reset()
        await sink.send(Batch(oid, 0, events[-1].seq, events), _nothing)
        assert proxy.turns == 1
        await sink.close()


async def test_an_empty_drain_is_a_few_round_trips_partitioned_or_not(
    outbox_path: Path, pg_dsn: str, subprocess_env: dict[str, str]
) -> None:
    """The whole fixed cost of a cron drain, as a process: connect, the start-up catalog read
    (schema check, routes' columns, partitions: one query), lease, position, release."""
    await migrate(pg_dsn)
    await fill(outbox_path, 1)
    cli = Cli("script", subprocess_env)
    assert cli("shipper", "drain", "--outbox", str(outbox_path), "--dsn", pg_dsn).code == 0
    trips = {}
    for partitioned in (False, True):
        if partitioned:
            await migrate(pg_dsn, partition="monthly", move_rows=True)
        async with DelayProxy(pg_dsn) as proxy:
            drained = await asyncio.to_thread(cli, "shipper", "drain", "--outbox", str(outbox_path), "--dsn", proxy.dsn())
            assert drained.code == 0, drained.stderr
            trips[partitioned] = proxy.turns
    # the handshake (2), the start-up read (1; 2 with a partition registry), the lease (1), the
    # position (1), the ledger's housekeeping (1), the release (1), the goodbye (1)
    # was 12 unpartitioned and 28 partitioned (fetches prepared: two round trips each; housekeeping
    # locking to make partitions that were there already)
    assert trips[False] <= 8 and trips[True] <= trips[False] + 1, trips


async def _nothing(failures: object) -> None:
    raise AssertionError(f"nothing should be set aside: {failures}")


async def test_a_frozen_migration_neither_blocks_current_tables_nor_hangs_a_drain(
    tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str]
) -> None:
    """Another migrator holds the migration lock (frozen mid-migration): a drain on current tables
    never waits for it, and on tables that need migrating gives up within --timeout."""
    cli = Cli("script", subprocess_env)
    other = await asyncpg.connect(pg_dsn)
    try:
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT pg_advisory_xact_lock(x'4F42'::int, hashtext('public'))")
        path = tmp_path / "a.db"
        async with Outbox(path) as ob:
            await ob.append("clicks", {"i": 1})
        stuck = cli("shipper", "drain", "--outbox", str(path), "--dsn", pg_dsn, "--timeout", "2")
        stuck.assert_one_error_line(4, "2 s")
        await tx.rollback()
        await migrate(pg_dsn)
        tx = other.transaction()
        await tx.start()
        await other.execute("SELECT pg_advisory_xact_lock(x'4F42'::int, hashtext('public'))")
        done = cli("shipper", "drain", "--outbox", str(path), "--dsn", pg_dsn, "--timeout", "20")
        assert done.code == 0 and done.stdout.startswith("shipped 1 event"), done.stderr
        await tx.rollback()
    finally:
        await other.close()
