"""A binary COPY with statements around it, sent as one query: one round trip per batch.

asyncpg's ``copy_records_to_table`` sends ``COPY .. FROM STDIN`` alone, so an exactly-once batch
(BEGIN, the ledger row, the COPY, COMMIT) costs three round trips where a plain COPY costs one.
Postgres runs a simple query's statements in order and enters COPY mode when it reaches the COPY,
so ``BEGIN; INSERT ..; COPY .. FROM STDIN; COMMIT`` is one query, and asyncpg already streams the
rows without waiting for the server to ask for them. Measured here: the shipper's loop gets back
~0.7 ms of every ~4.5 ms batch, and its next read fits in the time Postgres spends on this one.
Rows may also go in COPY's text format, built beforehand (:func:`shipper.rows.events_copy_text`),
so that sending a batch costs the loop almost nothing.

This leans on two asyncpg internals (the protocol's ``copy_in`` and a prepared statement's
``_state``), the same ones ``copy_records_to_table`` uses. If a release changes them, the check
in :func:`supports_one_trip` fails and the caller sends the statements one by one instead.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Sequence
from typing import Any

import asyncpg

from .connection import PG_EPOCH_US

__all__ = ["copy_with_statements", "supports_one_trip"]


def supports_one_trip(conn: asyncpg.Connection) -> bool:
    """True if this asyncpg exposes what :func:`copy_with_statements` needs."""
    protocol = getattr(conn, "_protocol", None)
    return callable(getattr(protocol, "copy_in", None)) and callable(getattr(conn, "_prepare", None))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def copy_with_statements(
    conn: asyncpg.Connection,
    table: str,
    columns: Sequence[str],
    records: Iterable[Sequence[Any]],
    *,
    text: bytes | None = None,
    before: str = "",
    after: str = "",
    schema: str | None = None,
    intros: dict[str, Any] | None = None,
    pg_times: Sequence[str] = (),
) -> str:
    """Run ``before; COPY table(columns) FROM STDIN; after`` in one round trip.

    The rows go as ``text`` when given (COPY's text format, already encoded: nothing is left to
    do but send it), else as a binary COPY of ``records``. ``before`` and ``after`` are SQL text
    (no parameters: a simple query takes none), so callers build them from values they have
    checked. An error anywhere stops the rest; if ``before`` began a transaction it is left
    aborted for the caller to roll back. Returns the status of the last statement. Falls back to
    three round trips when :func:`supports_one_trip` is False. ``intros`` caches, per table, the
    column types a binary COPY needs (asking costs a round trip; they hold for the connection).

    ``pg_times``: ``timestamptz`` columns whose ``records`` hold Postgres's own binary value, the
    microseconds since 2000-01-01, which go as an ``int8``: the same eight bytes the timestamptz
    codec would send (:func:`shipper.connection.connect`), without its Python call per value
    (~0.15 us). Only on the one-trip path.
    """
    cols = ", ".join(_quote(c) for c in columns)
    target = f"{_quote(schema)}.{_quote(table)}" if schema else _quote(table)
    if not supports_one_trip(conn):
        if before:
            await conn.execute(before)
        if text is not None:
            status: str = await conn.copy_to_table(
                table, source=io.BytesIO(text), columns=list(columns), format="text", schema_name=schema
            )
        else:
            if pg_times:  # through the connection's timestamptz codec, which takes Unix microseconds
                at = {i for i, c in enumerate(columns) if c in pg_times}
                records = [tuple(v + PG_EPOCH_US if i in at else v for i, v in enumerate(r)) for r in records]
            status = await conn.copy_records_to_table(table, records=records, columns=list(columns), schema_name=schema)
        if after:
            status = await conn.execute(after)
        return status
    copy = f"COPY {target} ({cols}) FROM STDIN"
    if text is not None:
        data, rows, types = memoryview(text), None, None
    else:
        # The statement asyncpg itself prepares to learn the columns' types (and so their
        # encoders). With the statement cache off (poolers) it is unnamed: only its types are
        # kept, never the server-side statement, so reusing them is pooler-safe.
        shown = ", ".join(f"0::int8 AS {_quote(c)}" if c in pg_times else _quote(c) for c in columns)
        key = f"{target} ({shown})"
        types = None if intros is None else intros.get(key)
        if types is None:
            types = (await conn._prepare(f"SELECT {shown} FROM {target} LIMIT 1", use_cache=True))._state
            if intros is not None:
                intros[key] = types
        copy += " (FORMAT binary)"
        data, rows = None, records
    query = "; ".join(part for part in (before, copy, after) if part)
    return str(await conn._protocol.copy_in(query, None, data, rows, types, None))
