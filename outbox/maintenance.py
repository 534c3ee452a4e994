"""Operator work on an outbox: pruning, the JSON-lines record shape, importing, checkpoints.

These are the only writes to the events file besides appends. Each runs in short transactions
(a few hundred rows) so a bot appending meanwhile waits at most a millisecond or two.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from collections.abc import AsyncIterable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from . import shipclock
from .errors import OutboxError, PayloadError
from .ids import uuid7_time_ms
from .payload import check_topic, encode_payload
from .reader import Event, OutboxReader

__all__ = [
    "prune",
    "checkpoint",
    "event_record",
    "parse_record",
    "ImportResult",
    "import_records",
    "format_time",
]

_PRUNE_CHUNK = 500


def format_time(us: int) -> str:
    """Format microseconds since the epoch as ISO 8601 in UTC."""
    return datetime.fromtimestamp(us / 1e6, tz=timezone.utc).isoformat(timespec="microseconds")


async def prune(reader: OutboxReader, *, older_than_us: int, keep_bytes: int | None = None) -> int:
    """Delete events shipped before ``older_than_us``; never a pending or dead one.

    Counts from when each event *shipped*, not from its ``created_at`` (an imported event made
    30 days ago has only just shipped), and by the boot clock, which a jump of the wall clock
    cannot fool (see :mod:`outbox.shipclock`): ``older_than_us`` is turned into an age, *now
    minus it*, on the caller's own wall clock. An age of 0 or less prunes everything shipped.

    Runs in chunks of a few hundred rows so appenders are never held up for long. The row with
    the highest seq is always kept (seqs must never be reused; see :mod:`outbox.schema`).
    Returns how many events were deleted.
    """
    db = reader.db
    age_us = time.time_ns() // 1000 - older_than_us
    try:
        if age_us <= 0:
            limit = await reader.cursor()
        else:
            sql, params = shipclock.shipped_before_sql(age_us)
            limit = int(list(await db.execute_fetchall(sql, params))[0][0])
            # Marks below that one are of events pruned now: a later cut finds this mark or a
            # newer one, and one further back finds nothing left to prune. Without this, a mark
            # a minute would leave every prune half a million rows to scan after a year.
            await db.execute_fetchall("DELETE FROM ship.shipped_at WHERE cursor < ?", (limit,))
    except sqlite3.Error as exc:
        raise OutboxError(f"prune of {reader.path} failed: {exc}") from None
    deleted = 0
    while True:
        try:
            async with db.execute(
                "DELETE FROM events WHERE seq IN ("
                " SELECT e.seq FROM events e"
                " WHERE e.seq <= min(?, (SELECT cursor FROM ship.progress WHERE one = 1))"
                " AND e.seq < (SELECT max(seq) FROM events)"
                " AND NOT EXISTS (SELECT 1 FROM ship.dead d WHERE d.seq = e.seq)"
                " ORDER BY e.seq LIMIT ?)",
                (limit, _PRUNE_CHUNK),
            ) as cur:
                count = cur.rowcount
        except sqlite3.Error as exc:
            raise OutboxError(f"prune of {reader.path} failed: {exc}") from None
        deleted += count
        if count < _PRUNE_CHUNK:
            return deleted


async def checkpoint(reader: OutboxReader, *, truncate: bool = False) -> bool:
    """Copy the WAL back into the events file; ``truncate`` also shrinks the WAL to zero.

    A passive checkpoint is a chance taken, not a duty: when SQLite says not now (a read still
    open on this connection: "database table is locked"; a writer in the way: busy) it returns
    False and the next one, a second later, does the work. Failing instead used to fail the
    shipper's batch loop, drop its Postgres connection and back off in the middle of a drain.
    Each statement is stepped to its end, so none stays open on the connection after it.
    """
    mode = "TRUNCATE" if truncate else "PASSIVE"
    try:
        await reader.db.execute_fetchall(f"PRAGMA main.wal_checkpoint({mode})")
        await reader.db.execute_fetchall(f"PRAGMA ship.wal_checkpoint({mode})")  # the side file's notes, too
    except sqlite3.Error as exc:
        if not truncate and (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF in (sqlite3.SQLITE_LOCKED, sqlite3.SQLITE_BUSY):
            return False
        raise OutboxError(f"checkpoint of {reader.path} failed: {exc}") from None
    return True


def event_record(event: Event, status: str | None = None) -> dict[str, Any]:
    """Return the JSON-lines record of an event (the shape ``outbox export`` writes)."""
    record: dict[str, Any] = {
        "id": event.id,
        "topic": event.topic,
        "payload": json.loads(event.payload),
        "created_at": format_time(event.created_at),
        "seq": event.seq,
    }
    if status is not None:
        record["status"] = status
    return record


def parse_record(line: str, max_payload_bytes: int = 65536) -> tuple[str, str, str, int]:
    """Validate one JSON-lines record as ``append`` would; return ``(id, topic, json, created_us)``.

    Raises :class:`PayloadError` naming what is wrong with the line.
    """
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise PayloadError(f"not valid JSON ({exc.msg} at column {exc.colno})") from None
    except RecursionError:
        raise PayloadError("nested too deeply to read") from None
    if not isinstance(record, dict):
        raise PayloadError(f"a record must be a JSON object, not {type(record).__name__}")
    missing = [key for key in ("id", "topic", "payload") if key not in record]
    if missing:
        raise PayloadError(f"record lacks {', '.join(missing)}")
    event_id = record["id"]
    if not isinstance(event_id, str):
        raise PayloadError("id must be a string")
    try:
        parsed = uuid.UUID(event_id)
    except ValueError:
        raise PayloadError(f"id {event_id[:60]!r} is not a UUID") from None
    topic = check_topic(record["topic"])
    text, _ = encode_payload(record["payload"], max_payload_bytes)
    created = record.get("created_at")
    if created is None:
        created_us = uuid7_time_ms(event_id) * 1000 if parsed.version == 7 else 0
    elif isinstance(created, str):
        try:
            moment = datetime.fromisoformat(created.replace("Z", "+00:00"))
        except ValueError:
            raise PayloadError(f"created_at {created[:60]!r} is not an ISO 8601 time") from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        created_us = int(moment.timestamp() * 1_000_000)
    else:
        raise PayloadError("created_at must be an ISO 8601 string")
    return str(parsed), topic, text, created_us


@dataclass
class ImportResult:
    """What an import did."""

    added: int = 0
    already_present: int = 0
    skipped: list[tuple[int, str]] | None = None  # (line number, why), with skip_bad


async def import_records(
    reader: OutboxReader,
    lines: AsyncIterable[tuple[int, str]],
    *,
    skip_bad: bool = False,
    chunk: int = 2000,
    progress: Callable[[str, int], None] | None = None,
    max_payload_bytes: int = 65536,
) -> ImportResult:
    """Add records to the outbox as pending events, keeping their ids.

    ``lines`` yields ``(line_number, text)``. Two passes keep this safe on files of millions of
    lines: first every line is validated as ``append`` would and staged in a temporary table
    (on disk, so memory stays bounded, and no lock on the events file is held); without
    ``skip_bad`` the first bad line raises :class:`PayloadError` naming it, and nothing has been
    imported. Then the staged rows move into the events file in short transactions, so a bot
    appending meanwhile is never held up for long. Ids already in the outbox (or twice in the
    file) are left out, so importing the same file again adds nothing, and an import killed
    half-way is finished by running it again. ``progress(phase, n)`` reports lines read and
    rows moved.
    """
    db = reader.db
    result = ImportResult(skipped=[] if skip_bad else None)
    try:
        await db.execute("DROP TABLE IF EXISTS temp.stage")
        await db.execute(
            "CREATE TEMP TABLE stage (ord INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE ON CONFLICT IGNORE,"
            " topic TEXT NOT NULL, payload TEXT NOT NULL, created_at INTEGER NOT NULL)"
        )
        rows: list[tuple[str, str, str, int]] = []
        valid = 0
        async for number, line in lines:
            if not line.strip():
                continue
            try:
                rows.append(parse_record(line, max_payload_bytes))
            except PayloadError as exc:
                if result.skipped is None:
                    raise PayloadError(f"line {number}: {exc}") from None
                result.skipped.append((number, str(exc)))
                continue
            valid += 1
            if len(rows) >= chunk:
                await _stage(db, rows)
                rows = []
                if progress is not None:
                    progress("read", number)
        await _stage(db, rows)
        await db.execute("CREATE TEMP TABLE known (id TEXT PRIMARY KEY) WITHOUT ROWID")
        await db.execute("INSERT OR IGNORE INTO temp.known SELECT id FROM main.events")
        top = int(list(await db.execute_fetchall("SELECT coalesce(max(ord), 0) FROM temp.stage"))[0][0])
        low = 0
        while low < top:
            high = low + chunk
            await db.execute("BEGIN IMMEDIATE")
            async with db.execute(
                "INSERT INTO main.events(id, topic, payload, created_at)"
                " SELECT s.id, s.topic, s.payload, s.created_at FROM temp.stage s"
                " WHERE s.ord > ? AND s.ord <= ? AND NOT EXISTS (SELECT 1 FROM temp.known k WHERE k.id = s.id)"
                " ORDER BY s.ord",
                (low, high),
            ) as cur:
                result.added += cur.rowcount
            await db.execute("COMMIT")
            low = high
            if progress is not None:
                progress("move", min(low, top))
        result.already_present = valid - result.added  # in the outbox, or earlier in the file
    except BaseException as exc:
        if db.in_transaction:
            await db.execute("ROLLBACK")
        if isinstance(exc, sqlite3.Error):
            raise OutboxError(f"import into {reader.path} failed: {exc}") from None
        raise
    finally:
        for table in ("stage", "known"):
            try:
                await db.execute(f"DROP TABLE IF EXISTS temp.{table}")
            except sqlite3.Error:
                pass
    return result


async def _stage(db: Any, rows: list[tuple[str, str, str, int]]) -> None:
    if rows:
        await db.executemany("INSERT INTO temp.stage(id, topic, payload, created_at) VALUES (?, ?, ?, ?)", rows)
