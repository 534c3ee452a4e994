"""The Postgres sink: exactly once at (nearly) the speed of a plain COPY.

Fast path, one transaction per batch, sent as one query: insert the ledger row
``(outbox_id, after_seq)``, then a binary ``COPY`` of the rows, then commit. A repeat of a
committed batch fails on the ledger's primary key and is refused whole, so COPY needs no
``ON CONFLICT``.

Careful path, when the fast one hits a row Postgres refuses or an id it already holds (a replay,
an import): in one transaction, the ledger row, then each table's rows moved in without a
temporary table (hosted roles often lack TEMP): ``outbox_events`` rows as one array per column,
``INSERT .. SELECT FROM unnest(..) ON CONFLICT DO NOTHING``; a route's rows (:mod:`shipper.routes`)
as text with Postgres's casts (:mod:`shipper.refusals`); each chunk inside a savepoint. A refused
chunk is bisected, savepoint by savepoint, down to the rows at fault; those are handed to
``set_aside`` before the commit and the rest ship.

Both paths start with the lease's fence (:mod:`shipper.lease`) and ``SET LOCAL`` timeouts, so a
batch of a shipper that lost its lease is refused whole, and a frozen shipper's transaction ends
within the lease's TTL instead of holding its locks. Every table is named with its schema.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from outbox import Event

from .catalog import read_json
from .connection import connect, local_settings, qualified, quote_ident
from .dsn import redact_dsn
from .errors import GrantError, LeaseLost, classify, grant_for
from .lease import fence_sql, release_sql, renew_sql, take_sql
from .migrate import DEFAULT_SCHEMA, EVENT_TABLE, LEDGER_TABLE, current_sql, ensure_schema
from .pgcopy import copy_with_statements
from .partitions import Partitions
from .refusals import column_at_fault, insert_text, refusal_kind
from .routes import Router
from .rows import Table
from .sink import Batch, SendResult, SetAside
from .typedrows import PG_TIME

__all__ = ["PostgresSink"]

log = logging.getLogger(__name__)

_LEDGER_KEY = f"{LEDGER_TABLE}_pkey"


class PostgresSink:
    """Delivers batches to Postgres over one connection, reconnecting on demand.

    Parameters
    ----------
    dsn:
        Where to connect. Shown redacted in every message.
    migrate:
        Create or upgrade the tables on the first connection.
    command_timeout:
        Seconds before a statement is abandoned as hung (a transient failure).
    schema:
        The Postgres schema holding the shipper's tables.
    lock_timeout:
        Seconds any statement waits for a lock (a frozen shipper's, a migration's) before giving up.
    batch_timeout:
        Seconds a batch transaction may run (``SET LOCAL statement_timeout``): a shipper frozen
        mid-batch releases its locks after this long. The shipper passes its lease's TTL.
    routes:
        ``{topic: table}``: the user's own tables (:mod:`shipper.routes`).
    pg_retention_s:
        Drop whole partitions older than this (:mod:`shipper.partitions`); None keeps them all.
    """

    def __init__(
        self,
        dsn: str,
        *,
        migrate: bool = True,
        command_timeout: float = 60.0,
        schema: str = DEFAULT_SCHEMA,
        lock_timeout: float = 5.0,
        batch_timeout: float = 30.0,
        routes: Mapping[str, str] | None = None,
        pg_retention_s: float | None = None,
    ) -> None:
        self.dsn = dsn
        self.router = Router(routes, schema=schema)
        self.partitions = Partitions(self.router.schema, retention_s=pg_retention_s)
        self.where = redact_dsn(dsn)
        self.schema = schema
        self._migrate = migrate
        self._migrated = False
        self._command_timeout = command_timeout
        self._lock_timeout = lock_timeout
        self._batch_timeout = batch_timeout
        self._conn: asyncpg.Connection | None = None
        self._types: dict[str, list[str]] = {}  # table -> its columns' array types, this connection
        self._intros: dict[str, Any] = {}  # table -> the binary COPY's column types, this connection
        self._ledger_insert = f"INSERT INTO {qualified(schema, LEDGER_TABLE)}(outbox_id, after_seq, last_seq, rows) VALUES"

    async def open(self) -> None:
        """Connect if not connected (raising ConnectError), and check (or migrate) the tables once."""
        if self._conn is not None and not self._conn.is_closed():
            return
        conn = await connect(self.dsn, command_timeout=self._command_timeout)
        try:
            # on every connect (a schema error reconnects, so re-reads): one read for the schema
            # check, the routes and the partitions; a migration (and a second read) only if needed
            check = self._migrate and not self._migrated
            found = await self._startup_read(conn, check)
            if check and (found is None or not found[2]):
                await ensure_schema(conn, self.schema, lock_timeout_s=self._lock_timeout, check_first=False)
                found = await self._startup_read(conn, False)
            assert found is not None
            self._migrated = self._migrated or self._migrate
            self.router.apply(found[0])
            await self.partitions.apply(conn, self.router.tables, found[1])
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self._types = {}
        self._intros = {}

    async def _startup_read(self, conn: asyncpg.Connection, check: bool) -> list[Any] | None:
        """``[routes' catalog, partitions' catalog, schema current?]`` in one round trip; with
        ``check``, None if the check failed (a table missing: the schema is not current)."""
        tables = self.router.tables
        parts = [self.router.catalog_sql(), self.partitions.catalog_sql(tables)]
        if not check:
            return list(await read_json(conn, f"json_build_array({', '.join(parts)})"))
        try:
            return list(await read_json(conn, f"json_build_array({', '.join(parts)}, {current_sql(self.schema)})"))
        except asyncpg.InsufficientPrivilegeError as exc:
            raise GrantError(f"{exc}: {grant_for(str(exc))}") from None
        except asyncpg.PostgresError:
            return None

    async def close(self) -> None:
        """Close the connection (a transaction in flight is rolled back by Postgres)."""
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await conn.close(timeout=5)
            except Exception:
                conn.terminate()

    @property
    def conn(self) -> asyncpg.Connection:
        """The live connection."""
        if self._conn is None or self._conn.is_closed():
            raise ConnectionError(f"not connected to {self.where}")
        return self._conn

    def _table(self, name: str) -> str:
        return qualified(self.schema, name)

    async def try_lease(self, outbox_id: str, holder: str, ttl: float, *, renew: bool = False) -> bool:
        """Take (or renew) the outbox's lease row: one round trip; a lock not granted in time is a no."""
        make = renew_sql if renew else take_sql
        try:
            status = await self.conn.execute(make(self.schema, outbox_id, holder, ttl, self._lock_timeout))
        except asyncpg.LockNotAvailableError:
            return False  # a batch of the holder is in flight (its fence holds the row)
        return bool(status.endswith(" 1"))

    async def release_lease(self, outbox_id: str, holder: str) -> None:
        """Expire the lease row now, if ``holder`` holds it."""
        await self.conn.execute(release_sql(self.schema, outbox_id, holder, self._lock_timeout))

    async def position(self, outbox_id: str) -> int:
        """Return the last seq of the newest ledger row of this outbox."""
        text = await self._rows_text(
            f"SELECT last_seq FROM {self._table(LEDGER_TABLE)} WHERE outbox_id = {_uuid_literal(outbox_id)}"
            " ORDER BY after_seq DESC LIMIT 1"
        )
        return int(text or 0)

    async def _rows_text(self, query: str) -> str:
        """Run ``query`` as ``COPY (query) TO STDOUT``: its rows as text lines in one round trip.

        asyncpg fetches rows only through a prepared statement, and with the statement cache off
        (poolers) that is two round trips: prepare, then execute. A COPY is a simple query. So
        ``query`` takes no parameters: callers format in only values checked here.
        """
        chunks: list[bytes] = []

        async def take(data: bytes) -> None:
            chunks.append(bytes(data))

        await self.conn.copy_from_query(query, output=take)
        return b"".join(chunks).decode().strip()

    async def send(self, batch: Batch, set_aside: SetAside) -> SendResult:
        """Deliver a batch: fast path first, careful path if a row is refused or already there."""
        routed = batch.routed if batch.router is self.router else self.router.route(batch.events)
        conn = self.conn
        await self.partitions.ensure(conn, routed.tables)
        if routed.refused:  # before the commit: a crash in between must not lose them
            await set_aside(routed.refused)
        try:
            try:
                await self._send_fast(batch, routed.tables)
            except BaseException:
                await _rollback(conn)
                raise
            return SendResult(shipped=sum(len(t.events) for t in routed.tables), rejected=routed.refused)
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if isinstance(exc, asyncpg.UniqueViolationError) and exc.constraint_name == _LEDGER_KEY:
                # this batch's ledger row is already there: a repeat, refused whole
                return SendResult(already_shipped_to=await self._ledger_end(batch))
            kind = refusal_kind(exc, routed.tables)
            if classify(exc) == "lease":
                raise LeaseLost(f"batch after seq {batch.after_seq} refused: {_one_line(exc)}") from None
            if kind not in ("row", "conflict"):
                raise
            log.info("batch after seq %d needs the careful path: %s", batch.after_seq, _one_line(exc))
        async with conn.transaction():
            try:
                await conn.execute(self._preamble(batch))
            except asyncpg.PostgresError as exc:
                if classify(exc) == "lease":
                    raise LeaseLost(f"batch after seq {batch.after_seq} refused: {_one_line(exc)}") from None
                raise
            if not await self._ledger(batch):
                return SendResult(already_shipped_to=await self._ledger_end(batch))
            result = SendResult(rejected=list(routed.refused), added=0)
            for table in routed.tables:
                refused, added = await self._upsert_counted(table)
                result.rejected += refused
                result.shipped += len(table.rows) - len(refused)
                result.added = (result.added or 0) + added
            if result.rejected:
                await set_aside(result.rejected)
        return result

    async def upsert(self, events: Sequence[Event], set_aside: SetAside | None = None) -> SendResult:
        """Deliver events in one transaction, skipping ids already present, isolating bad rows."""
        routed = self.router.route(events)
        await self.partitions.ensure(self.conn, routed.tables)
        result = SendResult(rejected=list(routed.refused), added=0)
        async with self.conn.transaction():
            await self.conn.execute(
                local_settings(lock_timeout_s=self._lock_timeout, idle_timeout_s=self._batch_timeout)
            )
            for table in routed.tables:
                refused, added = await self._upsert_counted(table)
                result.rejected += refused
                result.shipped += len(table.rows) - len(refused)
                result.added = (result.added or 0) + added
            if result.rejected and set_aside is not None:
                await set_aside(result.rejected)
        return result

    async def missing(self, events: Sequence[Event]) -> list[Event]:
        """Return the events whose id is in no table: their route's, or ``outbox_events`` (where
        a topic's events went before it had a route)."""
        by_table: dict[str, list[Event]] = {}
        for event in events:
            by_table.setdefault(self.router.table_of(event.topic), []).append(event)
        found: set[str] = set()
        for table, group in by_table.items():
            found |= await self._held(table, group)
            if table != EVENT_TABLE:
                found |= await self._held(EVENT_TABLE, [e for e in group if e.id not in found])
        return [e for e in events if e.id not in found]

    async def _held(self, table: str, events: Sequence[Event]) -> set[str]:
        if not events:
            return set()
        ids = ",".join(str(uuid.UUID(e.id)) for e in events)  # checked: formatted into the query
        text = await self._rows_text(f"SELECT id::text FROM {self._table(table)} WHERE id = ANY('{{{ids}}}'::uuid[])")
        return set(text.split())  # one round trip (a COPY), where a fetch is two with the cache off

    async def housekeeping(self, outbox_id: str, retention_s: float) -> None:
        """Drop ledger rows older than the retention, always keeping the newest."""
        ledger, oid = self._table(LEDGER_TABLE), _uuid_literal(outbox_id)
        await self.conn.execute(  # a simple query: one round trip, its lock waits bounded
            f"{local_settings(lock_timeout_s=self._lock_timeout)}; DELETE FROM {ledger} WHERE outbox_id = {oid}"
            f" AND shipped_at < now() - make_interval(secs => {float(retention_s)!r})"
            f" AND after_seq < (SELECT max(after_seq) FROM {ledger} WHERE outbox_id = {oid})"
        )
        await self.partitions.housekeeping(self.conn)

    # -- internals -------------------------------------------------------------------------------

    def _preamble(self, batch: Batch) -> str:
        """The batch transaction's first statements: its time limits, then the lease's fence."""
        settings = local_settings(
            lock_timeout_s=self._lock_timeout, statement_timeout_s=self._batch_timeout, idle_timeout_s=self._batch_timeout
        )
        fence = "" if batch.lease is None else f"; {fence_sql(self.schema, batch.outbox_id, batch.lease)}"
        return f"{settings}{fence}"

    async def _ledger(self, batch: Batch) -> bool:
        """Insert the batch's ledger row; False if that key is already taken (a repeat).

        The careful path's twin of the ledger row in :meth:`_send_fast`: it bisects with
        savepoints, and asyncpg allows ``conn.transaction()`` savepoints only inside a
        transaction it began itself.
        """
        status = await self.conn.execute(
            f"{self._ledger_insert} ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            batch.outbox_id,
            batch.after_seq,
            batch.last_seq,
            len(batch.events),
        )
        return bool(status.endswith(" 1"))

    async def _send_fast(self, batch: Batch, tables: list[Table]) -> None:
        """The fast path: the fence, the ledger row and a plain COPY per table, in one transaction.

        One round trip for the usual one-table batch: ``BEGIN; SET LOCAL ..; SELECT fence(..);
        INSERT INTO ledger ..; COPY ..; COMMIT`` as a single query (:mod:`shipper.pgcopy`). A repeat of a committed batch fails
        on the ledger's primary key before any row is sent. A simple query cannot take
        parameters, so the ledger's values are formatted in; each is an int or a UUID parsed and
        re-printed here, so nothing from outside reaches the SQL text.
        """
        outbox_id = str(uuid.UUID(batch.outbox_id))
        values = f"'{outbox_id}', {int(batch.after_seq)}, {int(batch.last_seq)}, {len(batch.events)}"
        ledger = f"BEGIN; {self._preamble(batch)}; {self._ledger_insert} ({values})"
        if not tables:  # every event refused before Postgres: only the ledger row
            await self.conn.execute(f"{ledger}; COMMIT")
            return
        for i, table in enumerate(tables):
            text = table.copy_text()
            rows: Sequence[Sequence[Any]]
            pg_times: tuple[str, ...]
            if text is not None:  # COPY text, built beforehand
                rows, pg_times = (), ()
            elif table.records is not None:  # typed values, their time Postgres's own (typedrows)
                rows, pg_times = table.records, (PG_TIME,)
            else:
                rows, pg_times = table.rows, ()
            await copy_with_statements(
                self.conn,
                table.name,
                table.columns,
                rows,
                schema=self.schema,
                intros=self._intros,
                pg_times=pg_times,
                text=text,
                before=ledger if i == 0 else "",
                after="COMMIT" if i == len(tables) - 1 else "",
            )

    async def _ledger_end(self, batch: Batch) -> int:
        return int(
            await self._rows_text(
                f"SELECT last_seq FROM {self._table(LEDGER_TABLE)}"
                f" WHERE outbox_id = {_uuid_literal(batch.outbox_id)} AND after_seq = {int(batch.after_seq)}"
            )
        )

    async def _array_types(self, table: Table) -> list[str]:
        """The table's columns' array types (``"pg_catalog"."jsonb"[]``, ...), asked once per connection."""
        types = self._types.get(table.name)
        if types is None:
            cols = ", ".join(quote_ident(c) for c in table.columns)
            statement = await self.conn.prepare(f"SELECT {cols} FROM {self._table(table.name)} LIMIT 0")
            types = [f"{quote_ident(a.type.schema)}.{quote_ident(a.type.name)}[]" for a in statement.get_attributes()]
            self._types[table.name] = types
        return types

    async def _upsert_counted(self, table: Table) -> tuple[list[tuple[Event, str]], int]:
        """Upsert all of a table's rows; return the refused ones and how many rows were new."""
        added = [0]
        refused = await self._upsert(table, table.rows, table.events, added)
        return refused, added[0]

    async def _upsert(
        self, table: Table, rows: list[tuple[Any, ...]], events: Sequence[Event], added: list[int]
    ) -> list[tuple[Event, str]]:
        """Insert rows from one array per column inside a savepoint; bisect on a refused row."""
        conn = self.conn
        columns = ", ".join(quote_ident(c) for c in table.columns)
        types = [] if table.spec is not None else await self._array_types(table)
        arrays = ", ".join(f"${i}::{kind}" for i, kind in enumerate(types, 1))
        try:
            async with conn.transaction():  # a savepoint: a refusal undoes only this chunk
                if table.spec is not None:  # a route's text rows, cast by Postgres
                    status = f"INSERT 0 {await insert_text(conn, self.router.schema, table, rows)}"
                else:
                    status = await conn.execute(
                        f"INSERT INTO {self._table(table.name)} ({columns}) SELECT * FROM unnest({arrays})"
                        f" ON CONFLICT ({', '.join(quote_ident(c) for c in table.conflict)}) DO NOTHING",
                        *(list(column) for column in zip(*rows)),
                    )
        except (asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if refusal_kind(exc, [table]) != "row":
                raise
            if len(rows) == 1:
                where = await column_at_fault(conn, table, rows[0], exc) if table.spec is not None else ""
                return [(events[0], where + _one_line(exc))]
            mid = len(rows) // 2
            return await self._upsert(table, rows[:mid], events[:mid], added) + await self._upsert(
                table, rows[mid:], events[mid:], added
            )
        added[0] += int(status.rsplit(" ", 1)[-1])  # "INSERT 0 <rows>"
        return []


async def _rollback(conn: asyncpg.Connection) -> None:
    """Roll back; if that cannot run (cancelled mid-query, broken link), drop the connection,
    which makes Postgres roll back instead."""
    try:
        if not conn.is_closed() and conn.is_in_transaction():
            await conn.execute("ROLLBACK")
    except BaseException:
        conn.terminate()


def _uuid_literal(value: str) -> str:
    return f"'{uuid.UUID(value)}'"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    state = getattr(exc, "sqlstate", None)
    return f"{text} (SQLSTATE {state})" if state else text
