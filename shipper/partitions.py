"""Time partitions in Postgres: made when events need them, dropped whole when past retention.

``shipper migrate --partition monthly|weekly|daily`` turns ``outbox_events`` and ``command_calls``
into tables partitioned by range of ``created_at`` and records the period in
``outbox_partitioning``. The primary key becomes ``(id, created_at)`` (Postgres requires the
partition key in every unique key); an event's id and its ``created_at`` travel together, so
``ON CONFLICT (id, created_at)`` still skips exactly the rows already there, and the ledger (not
partitioned) is unchanged.

There is no default partition: a row for a range with no partition would be refused. So before
each batch the sink checks the batch's times against the partitions it knows (two comparisons
in the usual case) and creates the missing ones first: an import, a replay or a late shard
brings the old months it needs. The shipper's housekeeping makes the next few periods ahead of
time and, with ``pg_retention_s``, drops partitions whose whole range is older than the
retention: never a partition holding anything newer. Creation and dropping take a
transaction-scoped advisory lock, so sidecars on many hosts do not trip over each other.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from outbox.records import rows_of

from .catalog import literal, read_json, text_array
from .errors import SchemaError
from .migrate import COMMAND_TABLE, EVENT_TABLE
from .routes import qualify, quote_ident
from .rows import Table

__all__ = ["PERIODS", "Partitions", "partition_tables", "period_start", "period_end", "REGISTRY"]

log = logging.getLogger(__name__)

PERIODS = ("monthly", "weekly", "daily")
REGISTRY = "outbox_partitioning"
_AHEAD = {"monthly": 2, "weekly": 4, "daily": 7}  # periods made ahead of time
_LOCK_KEY = 0x4F42_5831_0002  # "OBX1" + 2
_FAR = 2**62
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def _moment(us: int) -> datetime.datetime:
    return _EPOCH + datetime.timedelta(microseconds=us)


def _us(moment: datetime.datetime) -> int:
    return (moment - _EPOCH) // datetime.timedelta(microseconds=1)


def period_start(period: str, us: int) -> int:
    """The start (Unix microseconds, UTC) of the period holding ``us``."""
    day = _moment(us).replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "monthly":
        day = day.replace(day=1)
    elif period == "weekly":
        day -= datetime.timedelta(days=day.weekday())  # ISO weeks: Monday
    return _us(day)


def period_end(period: str, start: int) -> int:
    """The end (exclusive) of the period starting at ``start``."""
    day = _moment(start)
    if period == "monthly":
        return _us(day.replace(year=day.year + day.month // 12, month=day.month % 12 + 1))
    return _us(day + datetime.timedelta(days=7 if period == "weekly" else 1))


def _literal(us: int) -> str:
    return f"'{_moment(us).isoformat()}'"


def _gaps(lo: int, hi: int, bounds: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``[lo, hi)`` no existing partition covers (ranges made by hand included)."""
    gaps, cur = [], lo
    for a, b in sorted(bounds):
        if b <= cur or a >= hi:
            continue
        if a > cur:
            gaps.append((cur, a))
        cur = max(cur, b)
    if cur < hi:
        gaps.append((cur, hi))
    return gaps


def _bounds_sql(schema: str, tables: Sequence[str]) -> str:
    """A ``json`` expression: the partitions of ``tables`` as ``[parent, name, bound, from_us, to_us]``."""
    return (
        "(SELECT json_agg(json_build_array(p.relname::text, c.relname::text, pg_get_expr(c.relpartbound, c.oid),"
        " (SELECT (extract(epoch FROM m[1]::timestamptz) * 1000000)::bigint"
        "   FROM regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \\(''([^'']*)''\\)') AS m),"
        " (SELECT (extract(epoch FROM m[1]::timestamptz) * 1000000)::bigint"
        "   FROM regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \\(''([^'']*)''\\)') AS m)))"
        " FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
        f" JOIN pg_namespace n ON n.oid = p.relnamespace WHERE n.nspname = {literal(schema)}"
        f" AND p.relname = ANY({text_array(tables)}))"
    )


def _bounds_of(tables: Sequence[str], rows: Sequence[Sequence[Any]] | None) -> dict[str, list[tuple[str, int, int]]]:
    """Each table's partitions as ``(name, from_us, to_us)``; MINVALUE/MAXVALUE as far ends."""
    found: dict[str, list[tuple[str, int, int]]] = {t: [] for t in tables}
    for parent, name, expr, lo, hi in rows or ():
        if expr != "DEFAULT" and parent in found:
            found[parent].append((name, -_FAR if lo is None else lo, _FAR if hi is None else hi))
    return found


async def _bounds(conn: asyncpg.Connection, schema: str, tables: Sequence[str]) -> dict[str, list[tuple[str, int, int]]]:
    """Each table's partitions, read in one round trip."""
    return _bounds_of(tables, await read_json(conn, _bounds_sql(schema, tables)))


class Partitions:
    """The partitions of the tables registered in ``outbox_partitioning``, as one sink sees them.

    Parameters
    ----------
    schema:
        The schema of the tables.
    retention_s:
        Drop partitions whose whole range ended more than this long ago; None keeps them all.
    """

    def __init__(self, schema: str = "public", *, retention_s: float | None = None) -> None:
        if retention_s is not None and retention_s <= 0:
            raise ValueError("pg_retention_s must be positive")
        self.schema = schema
        self.retention_s = retention_s
        self.periods: dict[str, str] = {}
        self.bounds: dict[str, list[tuple[str, int, int]]] = {}
        self._warned: set[str] = set()

    async def load(self, conn: asyncpg.Connection, tables: Sequence[str]) -> None:
        """Read which of ``tables`` are partitioned, by what period, and their partitions."""
        await self.apply(conn, tables, await read_json(conn, self.catalog_sql(tables)))

    def catalog_sql(self, tables: Sequence[str]) -> str:
        """The catalog part of :meth:`load`, one ``json`` expression (a sink folds it into its
        start-up query): whether the registry exists, and the partitions of ``tables``."""
        registry = literal(qualify(self.schema, REGISTRY))
        return f"json_build_array(to_regclass({registry}) IS NOT NULL, {_bounds_sql(self.schema, tables)})"

    async def apply(self, conn: asyncpg.Connection, tables: Sequence[str], found: Sequence[Any]) -> None:
        """Take what :meth:`catalog_sql` read; with a registry, read its periods (one more round trip)."""
        registered, bounds = found
        if not registered:  # the usual case: nothing partitioned, no more to read
            self.periods, self.bounds = {}, {}
            return
        rows = await read_json(
            conn,
            f"(SELECT json_agg(json_build_array(table_name, period)) FROM {qualify(self.schema, REGISTRY)}"
            f" WHERE table_name = ANY({text_array(tables)}))",
        )
        self.periods = {r[0]: r[1] for r in rows or ()}
        every = _bounds_of(tables, bounds)
        self.bounds = {t: every[t] for t in self.periods}

    def _covers(self, table: str, us: int) -> bool:
        return any(lo <= us < hi for _, lo, hi in self.bounds.get(table, ()))

    async def ensure(self, conn: asyncpg.Connection, tables: Sequence[Table]) -> None:
        """Create the partitions the rows of ``tables`` need, before they are sent."""
        if not self.periods:
            return
        for table in tables:
            period = self.periods.get(table.name)
            if period is None or not table.events:
                continue
            times = [e[4] for e in rows_of(table.events)]
            lo, hi = min(times), max(times)
            if any(a <= lo and hi < b for _, a, b in self.bounds[table.name]):
                continue  # the usual case: one partition holds the whole batch
            starts = {period_start(period, us) for us in times if not self._covers(table.name, us)}
            await self.create(conn, table.name, sorted(starts))

    async def create(self, conn: asyncpg.Connection, table: str, starts: Sequence[int]) -> int:
        """Create the partitions of ``table`` for the periods starting at ``starts``; return how many."""
        if not starts:
            return 0
        period = self.periods[table]
        known = [(a, b) for _, a, b in self.bounds.get(table, ())]
        if not any(_gaps(start, period_end(period, start), known) for start in starts):
            return 0  # all there already (housekeeping's usual case): no lock, no round trip
        made = 0
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
            self.bounds.update(await _bounds(conn, self.schema, [table]))
            for start in starts:
                for lo, hi in _gaps(start, period_end(period, start), ((a, b) for _, a, b in self.bounds[table])):
                    made += await _create(conn, self.schema, table, table, lo, hi)
                    self.bounds[table].append(("", lo, hi))
        if made:
            log.info("created %d partition(s) of %s", made, table)
        return made

    async def housekeeping(self, conn: asyncpg.Connection, now_us: int | None = None) -> list[str]:
        """Make the next periods' partitions; drop those past retention; return the names dropped."""
        if not self.periods:
            return []
        now = time.time_ns() // 1000 if now_us is None else now_us
        dropped: list[str] = []
        for table, period in self.periods.items():
            try:
                dropped += await self._keep(conn, table, period, now)
            except asyncpg.InsufficientPrivilegeError as exc:  # a DML-only role: say so, keep shipping
                if table not in self._warned:
                    self._warned.add(table)
                    log.warning("cannot manage the partitions of %s (%s): run `shipper migrate` as the owner", table, exc)
        if dropped:
            log.info("dropped %d partition(s) past retention: %s", len(dropped), ", ".join(dropped))
        return dropped

    async def _keep(self, conn: asyncpg.Connection, table: str, period: str, now: int) -> list[str]:
        starts, start = [], period_start(period, now)
        for _ in range(_AHEAD[period] + 1):
            starts.append(start)
            start = period_end(period, start)
        await self.create(conn, table, starts)
        dropped: list[str] = []
        if self.retention_s is not None:
            cutoff = now - int(self.retention_s * 1e6)
            async with conn.transaction():
                await conn.execute("SELECT pg_advisory_xact_lock($1)", _LOCK_KEY)
                await conn.execute("SET LOCAL lock_timeout = '5s'")
                for name, lo, hi in (await _bounds(conn, self.schema, [table]))[table]:
                    if hi <= cutoff:  # the whole range is older than the retention
                        await conn.execute(f"DROP TABLE IF EXISTS {qualify(self.schema, name)}")
                        dropped.append(name)
            self.bounds.update(await _bounds(conn, self.schema, [table]))
        return dropped


async def _create(conn: asyncpg.Connection, schema: str, parent: str, base: str, lo: int, hi: int) -> int:
    moment = _moment(lo)
    suffix = f"{moment:%Y%m%d}" + ("" if moment.hour == moment.minute == moment.second == 0 else f"_{moment:%H%M%S}")
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {qualify(schema, f'{base}_p{suffix}')} PARTITION OF {qualify(schema, parent)}"
        f" FOR VALUES FROM ({_literal(lo)}) TO ({_literal(hi)})"
    )
    return 1


# -- migrate --partition -----------------------------------------------------------------------


async def partition_tables(conn: asyncpg.Connection, period: str, *, move_rows: bool = False, schema: str = "public") -> None:
    """Make ``outbox_events`` and ``command_calls`` partitioned by ``period``, inside the caller's
    transaction. A table that already holds rows is refused unless ``move_rows`` (then its rows
    are copied into the new partitioned table, which takes its place)."""
    if period not in PERIODS:
        raise SchemaError(f"unknown partition period {period!r}: use one of {', '.join(PERIODS)}")
    registry = qualify(schema, REGISTRY)
    await conn.execute(
        f"CREATE TABLE IF NOT EXISTS {registry} (table_name text PRIMARY KEY,"
        f" period text NOT NULL CHECK (period IN ('monthly', 'weekly', 'daily')))"
    )
    keeper = Partitions(schema)
    for table in (EVENT_TABLE, COMMAND_TABLE):
        kind = await conn.fetchval("SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1)", qualify(schema, table))
        known = await conn.fetchval(f"SELECT period FROM {registry} WHERE table_name = $1", table)
        if kind == "p":
            if known is not None and known != period:
                raise SchemaError(
                    f"{table} is already partitioned {known}; changing the period is not supported"
                    f" (run `shipper migrate --partition {known}`)"
                )
        else:
            span = await conn.fetchrow(
                "SELECT (extract(epoch FROM min(created_at)) * 1000000)::bigint,"
                f" (extract(epoch FROM max(created_at)) * 1000000)::bigint FROM {qualify(schema, table)}"
            )
            if span[0] is not None and not move_rows:
                raise SchemaError(
                    f"{table} already holds rows and is not partitioned: `shipper migrate --partition {period}"
                    " --move-rows` copies them into partitions (locking the table while it does; see docs/SCALING.md)"
                )
            await _convert(conn, schema, table, period, span[0], span[1])
        await conn.execute(f"INSERT INTO {registry} VALUES ($1, $2) ON CONFLICT (table_name) DO NOTHING", table, period)
    await keeper.load(conn, [EVENT_TABLE, COMMAND_TABLE])
    now = time.time_ns() // 1000
    for table in (EVENT_TABLE, COMMAND_TABLE):
        start, starts = period_start(period, now), []
        for _ in range(_AHEAD[period] + 1):
            starts.append(start)
            start = period_end(period, start)
        await keeper.create(conn, table, starts)


async def _convert(conn: asyncpg.Connection, schema: str, table: str, period: str, lo: int | None, hi: int | None) -> None:
    """Replace a plain table by a partitioned one of the same columns, its rows moved over."""
    new = f"{table}__partitioned"
    await conn.execute(
        f"CREATE TABLE {qualify(schema, new)} (LIKE {qualify(schema, table)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS"
        " INCLUDING STORAGE INCLUDING COMMENTS, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)"
    )
    if lo is not None and hi is not None:
        start = period_start(period, lo)
        while start <= hi:
            end = period_end(period, start)
            await _create(conn, schema, new, table, start, end)
            start = end
        columns = ", ".join(
            quote_ident(r[0])
            for r in await conn.fetch(
                "SELECT attname::text FROM pg_attribute WHERE attrelid = to_regclass($1) AND attnum > 0"
                " AND NOT attisdropped ORDER BY attnum",
                qualify(schema, new),
            )
        )
        moved = await conn.execute(
            f"INSERT INTO {qualify(schema, new)} ({columns}) SELECT {columns} FROM {qualify(schema, table)}"
        )
        log.warning("moved %s rows of %s into partitions", moved.rsplit(" ", 1)[-1], table)
    await conn.execute(f"DROP TABLE {qualify(schema, table)}")
    await conn.execute(f"ALTER TABLE {qualify(schema, new)} RENAME TO {quote_ident(table)}")
    await conn.execute(
        f"ALTER TABLE {qualify(schema, table)} RENAME CONSTRAINT {quote_ident(new + '_pkey')} TO {quote_ident(table + '_pkey')}"
    )
