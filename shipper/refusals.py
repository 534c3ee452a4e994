"""A route's careful path: its text rows inserted with Postgres's own casts, and its refusals.

The fast path COPYs a batch in one go; when Postgres refuses a row, or holds an id already (a
replay, an import), the sink bisects the batch inside savepoints and moves each chunk with
:func:`insert_text`: ``INSERT .. SELECT r.col::type .. FROM unnest($1::text[], ..) ON CONFLICT
(key) DO NOTHING``, the same text input functions COPY uses, and no staging table (so a role with
DML rights only can run it). A refused row becomes a dead letter whose message names the column
at fault (:func:`column_at_fault`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from .errors import Kind, classify
from .routes import qualify, quote_ident
from .rows import Table

__all__ = ["insert_text", "column_at_fault", "refusal_kind"]


async def insert_text(conn: asyncpg.Connection, schema: str, table: Table, rows: Sequence[tuple[Any, ...]]) -> int:
    """Insert text rows with Postgres's casts, skipping ids already there; return rows added."""
    cols = ", ".join(quote_ident(c) for c in table.columns)
    casts = ", ".join(f"r.{quote_ident(c)}::{t}" for c, t in zip(table.columns, table.types))
    arrays = ", ".join(f"${i}::text[]" for i in range(1, len(table.columns) + 1))
    target = ", ".join(quote_ident(c) for c in table.conflict)
    status = await conn.execute(
        f"INSERT INTO {qualify(schema, table.name)} ({cols}) SELECT {casts} FROM unnest({arrays}) AS r({cols})"
        f" ON CONFLICT ({target}) DO NOTHING",
        *([list(values) for values in zip(*rows)] or [[] for _ in table.columns]),
    )
    return int(status.rsplit(" ", 1)[-1])


async def column_at_fault(conn: asyncpg.Connection, table: Table, row: Sequence[Any], exc: BaseException) -> str:
    """``"column NAME: "`` for the value Postgres could not convert (a cast error does not say
    which); found by casting the refused row's values one by one, each in a savepoint."""
    if not str(getattr(exc, "sqlstate", "")).startswith("22"):
        return ""  # a constraint's message already names what it checks
    for name, kind, value in zip(table.columns, table.types, row):
        if value is None:
            continue
        try:
            async with conn.transaction():
                await conn.fetchval(f"SELECT $1::text::{kind}", value)
        except asyncpg.DataError:
            return f"column {name}: "
    return ""


def refusal_kind(exc: BaseException, tables: Sequence[Table]) -> Kind:
    """:func:`classify`, but a NOT NULL column a route fills from payload keys is the row's fault.

    A NOT NULL column nobody fills (added by hand to ``outbox_events``) stays a schema error:
    every row would fail alike, so the events wait for a fix instead of all dying.
    """
    kind = classify(exc)
    if kind == "schema" and getattr(exc, "sqlstate", None) == "23502":
        table, column = getattr(exc, "table_name", None), getattr(exc, "column_name", None)
        for t in tables:
            # a partition's own name is what Postgres reports for a row refused in it
            if t.spec is not None and column in t.spec.keyed and (table is None or table.startswith(t.name)):
                return "row"
    return kind
