"""The Postgres sink: exactly once at (nearly) the speed of a plain COPY.

Fast path, one transaction per batch, sent as one query: insert the ledger row
``(outbox_id, after_seq)``, then a binary ``COPY`` of the rows, then commit. A repeat of a
committed batch fails on the ledger's primary key and is refused whole, so COPY needs no
``ON CONFLICT``.

Careful path, when the fast one hits a row Postgres refuses or an id it already holds (a replay,
an import): in one transaction, the ledger row, then each table's rows COPYed into a temporary
staging table and moved with ``INSERT .. ON CONFLICT (id) DO NOTHING`` inside a savepoint. A
refused chunk is bisected, savepoint by savepoint, down to the rows at fault; those are handed to
``set_aside`` before the commit and the rest ship. A route's rows (:mod:`shipper.routes`) take
no staging table: they are inserted as text with Postgres's casts (:mod:`shipper.refusals`).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import asyncpg

from outbox import Event

from .dsn import connect, redact_dsn
from .migrate import EVENT_TABLE, LEDGER_TABLE, ensure_schema
from .pgcopy import copy_with_statements
from .partitions import Partitions
from .refusals import column_at_fault, insert_text, refusal_kind
from .routes import Router
from .rows import Table
from .sink import Batch, SendResult, SetAside

__all__ = ["PostgresSink"]

log = logging.getLogger(__name__)

_PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds: Postgres's own epoch
_LEDGER_KEY = f"{LEDGER_TABLE}_pkey"
_LEDGER_INSERT = f"INSERT INTO {LEDGER_TABLE}(outbox_id, after_seq, last_seq, rows) VALUES"


def _lock_key(outbox_id: str) -> int:
    return int.from_bytes(uuid.UUID(outbox_id).bytes[:8], "big", signed=True)


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
        routes: Mapping[str, str] | None = None,
        pg_retention_s: float | None = None,
    ) -> None:
        self.dsn = dsn
        self.router = Router(routes)
        self.partitions = Partitions(self.router.schema, retention_s=pg_retention_s)
        self.where = redact_dsn(dsn)
        self._migrate = migrate
        self._migrated = False
        self._command_timeout = command_timeout
        self._conn: asyncpg.Connection | None = None
        self._staged: set[str] = set()

    async def open(self) -> None:
        """Connect if not connected (raising ConnectError), and migrate once."""
        if self._conn is not None and not self._conn.is_closed():
            return
        conn = await connect(self.dsn, command_timeout=self._command_timeout)
        try:
            await conn.set_type_codec(
                "timestamptz",
                schema="pg_catalog",
                encoder=lambda us: (us - _PG_EPOCH_US,),
                decoder=lambda t: t[0] + _PG_EPOCH_US,
                format="tuple",
            )
            if self._migrate and not self._migrated:
                await ensure_schema(conn)
                self._migrated = True
            await self.router.load(conn)  # on every connect: a schema error reconnects, so re-reads
            await self.partitions.load(conn, self.router.tables)
        except BaseException:
            conn.terminate()
            raise
        self._conn = conn
        self._staged = set()

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

    async def try_lease(self, outbox_id: str) -> bool:
        """Take a session advisory lock for the outbox; it lapses if this connection dies."""
        return bool(await self.conn.fetchval("SELECT pg_try_advisory_lock($1)", _lock_key(outbox_id)))

    async def position(self, outbox_id: str) -> int:
        """Return the last seq of the newest ledger row of this outbox."""
        value = await self.conn.fetchval(
            f"SELECT last_seq FROM {LEDGER_TABLE} WHERE outbox_id = $1 ORDER BY after_seq DESC LIMIT 1",
            outbox_id,
        )
        return int(value or 0)

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
            if refusal_kind(exc, routed.tables) not in ("row", "conflict"):
                raise
            log.info("batch after seq %d needs the careful path: %s", batch.after_seq, _one_line(exc))
        async with conn.transaction():
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
        rows = await self.conn.fetch(
            f"SELECT id::text FROM {table} WHERE id = ANY($1::uuid[])", [e.id for e in events]
        )
        return {r[0] for r in rows}

    async def housekeeping(self, outbox_id: str, retention_s: float) -> None:
        """Drop ledger rows older than the retention, always keeping the newest."""
        await self.conn.execute(
            f"DELETE FROM {LEDGER_TABLE} WHERE outbox_id = $1"
            " AND shipped_at < now() - make_interval(secs => $2)"
            f" AND after_seq < (SELECT max(after_seq) FROM {LEDGER_TABLE} WHERE outbox_id = $1)",
            outbox_id,
            float(retention_s),
        )
        await self.partitions.housekeeping(self.conn)

    # -- internals -------------------------------------------------------------------------------

    async def _ledger(self, batch: Batch) -> bool:
        """Insert the batch's ledger row; False if that key is already taken (a repeat).

        The careful path's twin of the ledger row in :meth:`_send_fast`: it bisects with
        savepoints, and asyncpg allows ``conn.transaction()`` savepoints only inside a
        transaction it began itself.
        """
        status = await self.conn.execute(
            f"{_LEDGER_INSERT} ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            batch.outbox_id,
            batch.after_seq,
            batch.last_seq,
            len(batch.events),
        )
        return bool(status.endswith(" 1"))

    async def _send_fast(self, batch: Batch, tables: list[Table]) -> None:
        """The fast path: the ledger row and a plain COPY per table, in one transaction.

        One round trip for the usual one-table batch: ``BEGIN; INSERT INTO ledger ..; COPY ..;
        COMMIT`` as a single query (:mod:`shipper.pgcopy`). A repeat of a committed batch fails
        on the ledger's primary key before any row is sent. A simple query cannot take
        parameters, so the ledger's values are formatted in; each is an int or a UUID parsed and
        re-printed here, so nothing from outside reaches the SQL text.
        """
        outbox_id = str(uuid.UUID(batch.outbox_id))
        values = f"'{outbox_id}', {int(batch.after_seq)}, {int(batch.last_seq)}, {len(batch.events)}"
        ledger = f"BEGIN; {_LEDGER_INSERT} ({values})"
        if not tables:  # every event refused before Postgres: only the ledger row
            await self.conn.execute(f"{ledger}; COMMIT")
            return
        for i, table in enumerate(tables):
            text = table.copy_text()
            await copy_with_statements(
                self.conn,
                table.name,
                table.columns,
                table.rows if text is None else (),
                text=text,
                before=ledger if i == 0 else "",
                after="COMMIT" if i == len(tables) - 1 else "",
            )

    async def _ledger_end(self, batch: Batch) -> int:
        value = await self.conn.fetchval(
            f"SELECT last_seq FROM {LEDGER_TABLE} WHERE outbox_id = $1 AND after_seq = $2",
            batch.outbox_id,
            batch.after_seq,
        )
        return int(value)

    async def _stage(self, table: Table) -> str:
        name = f"_stage_{table.name}"
        if name not in self._staged:
            await self.conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {name} (LIKE {table.name} INCLUDING DEFAULTS)"
                " ON COMMIT DELETE ROWS"
            )
            self._staged.add(name)
        return name

    async def _upsert_counted(self, table: Table) -> tuple[list[tuple[Event, str]], int]:
        """Upsert all of a table's rows; return the refused ones and how many rows were new."""
        added = [0]
        refused = await self._upsert(table, table.rows, table.events, added)
        return refused, added[0]

    async def _upsert(
        self, table: Table, rows: list[tuple[Any, ...]], events: list[Event], added: list[int]
    ) -> list[tuple[Event, str]]:
        """Move rows in through the staging table inside a savepoint; bisect on a refused row."""
        conn = self.conn
        columns = ", ".join(table.columns)
        stage = "" if table.spec is not None else await self._stage(table)
        try:
            async with conn.transaction():  # a savepoint: a refusal undoes only this chunk
                if table.spec is not None:  # a route's text rows, cast by Postgres
                    status = f"INSERT 0 {await insert_text(conn, self.router.schema, table, rows)}"
                else:
                    await conn.copy_records_to_table(stage, records=rows, columns=table.columns)
                    status = await conn.execute(
                        f"INSERT INTO {table.name} ({columns}) SELECT {columns} FROM {stage}"
                        f" ON CONFLICT ({', '.join(table.conflict)}) DO NOTHING"
                    )
                    await conn.execute(f"TRUNCATE {stage}")
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


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    state = getattr(exc, "sqlstate", None)
    return f"{text} (SQLSTATE {state})" if state else text
