"""The read side: what a shipper and the operator's tools need from an outbox.

Reads and writes go through aiosqlite: a worker-thread hop costs ~100 us, nothing next to a
Postgres round trip, and it keeps the event loop free. The one exception is the shipper's
read-ahead (``read_pending(..., on_loop=True)``): it runs on the event loop's own thread, a few
hundred rows at a time with a yield between, so it fills the time the loop would spend waiting for
Postgres. In a thread it would compete for the GIL with the COPY being sent next to it, which
measured ~15% off a drain. The events file is only *read* here (pruning and import, in
:mod:`outbox.maintenance`, are the exceptions); progress and dead letters are written to the
``PATH-ship`` side file, so shipping never holds the lock an appender needs.

Progress is one number, the cursor: every event with ``seq <= cursor`` has been shipped or set
aside as a dead letter. Rows are set aside *before* the batch holding them is committed, so a
crash in between never loses one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import aiosqlite

from . import opening, schema, shipclock, status
from .records import NOT_SET_ASIDE, DeadLetter, Event, EventRow, EventRows
from .status import Status, TopicStatus
from .errors import OutboxClosedError, OutboxTextError

__all__ = ["Event", "DeadLetter", "Status", "TopicStatus", "OutboxReader"]


_EVENT_COLUMNS = "e.seq, e.id, e.topic, e.payload, e.created_at"
# Past the cursor a dead letter is rare: the uncorrelated test runs once per read, and only when
# it finds one does each row pay the lookup in ship.dead (a read ~10% cheaper without it).
_PENDING = (
    f"SELECT {_EVENT_COLUMNS} FROM events e WHERE e.seq > ?1"
    f" AND (NOT EXISTS (SELECT 1 FROM ship.dead WHERE seq > ?1) OR {NOT_SET_ASIDE}) ORDER BY e.seq LIMIT ?2"
)
_RETRIES = (
    f"SELECT {_EVENT_COLUMNS} FROM ship.dead d JOIN events e ON e.seq = d.seq WHERE d.status = 'retry' ORDER BY d.seq LIMIT ?"
)
# The same rows with their text as bytes, which any row reads as, valid UTF-8 or not.
_RAW_COLUMNS = "e.seq, CAST(e.id AS BLOB), CAST(e.topic AS BLOB), CAST(e.payload AS BLOB), e.created_at"
_PENDING_RAW = _PENDING.replace(_EVENT_COLUMNS, _RAW_COLUMNS, 1)
_RETRIES_RAW = _RETRIES.replace(_EVENT_COLUMNS, _RAW_COLUMNS, 1)
_INLINE_CHUNK = 256  # rows per step of an inline read: ~0.2 ms of the loop's time each


def _problems(texts: Sequence[bytes | None]) -> str:
    """Which of an event's (id, topic, payload), read as bytes, are not UTF-8, and where each
    stops being so ("payload is not valid UTF-8 (byte 0xff at offset 18)"); "" if none."""
    problems = []
    for name, raw in zip(("id", "topic", "payload"), texts):
        try:
            bytes(raw or b"").decode("utf-8")
        except UnicodeDecodeError as exc:
            problems.append(f"{name} is not valid UTF-8 (byte 0x{exc.object[exc.start]:02x} at offset {exc.start})")
    return "; ".join(problems)


def _shown(row: Sequence[Any]) -> Event:
    """A row read as bytes, as an event to set aside: id and topic with U+FFFD for bytes that
    are not UTF-8, no payload."""
    seq, raw_id, raw_topic, _, created_at = row
    shown = [bytes(raw or b"").decode("utf-8", "replace") for raw in (raw_id, raw_topic)]
    return Event(seq, shown[0], shown[1], "", created_at)


def _readable(path: Path, rows: Sequence[Sequence[Any]], unreadable: Callable[[Event, str], object] | None) -> list[Event]:
    """The events of ``rows``, read as bytes (a chunk sqlite3 could not read as text): those
    that are UTF-8, each other one handed to ``unreadable`` with why (or raised)."""
    events = []
    for row in rows:
        if not (problems := _problems(row[1:4])):
            seq, raw_id, raw_topic, raw_payload, created_at = row
            events.append(Event(seq, raw_id.decode(), raw_topic.decode(), raw_payload.decode(), created_at))
            continue
        shown = _shown(row)
        if unreadable is None:
            raise OutboxTextError(f"outbox {path}: seq {shown.seq} (id {shown.id}): {problems}")
        unreadable(shown, problems)
    return events


def _now_us() -> int:
    return time.time_ns() // 1000


class OutboxReader:
    """Reads batches from an outbox and records how far shipping has got.

    Parameters
    ----------
    path:
        An existing outbox file (``OutboxError`` if there is none; ``NotAnOutboxError`` if the
        file is something else).
    create:
        Create the outbox if it is missing (a sidecar may start before the bot).
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = Path(path)
        self._create = create
        self._db: aiosqlite.Connection | None = None
        self._inline: sqlite3.Connection | None = None  # read_pending's, on the loop's thread
        self._closed = False
        # only looking, and no side file yet: one in memory stands in (see outbox.opening)
        self._opened = opening.Opened("", [], False)
        self.outbox_id = ""

    async def open(self) -> OutboxReader:
        """Check both files (creating the side file) and connect."""
        if self._db is not None:
            return self
        if self._closed:
            raise OutboxClosedError(f"reader of {self.path} is closed")
        self._opened = await asyncio.to_thread(opening.prepare, self.path, self._create)
        self.outbox_id = self._opened.outbox_id
        db = await opening.connect(self.path, self._opened)
        try:
            inline = opening.connect_inline(self.path, self._opened)
        except BaseException:
            await db.close()
            raise
        self._db, self._inline = db, inline
        return self

    async def _materialize(self) -> None:
        """Before a first write: make the real side file and attach it in place of the stand-in."""
        if not (self._opened.side_missing or self._opened.read_only):
            return
        opened = self._opened._replace(outbox_id=self.outbox_id)
        await opening.materialize(self.path, opened, self.db, self._inline)  # refuses without write access
        self._opened = opened._replace(side_missing=False)

    async def fork(self, why: str) -> str:
        """Take a new outbox id (the shipper found this file is a copy); return it.

        Progress and dead letters stay: the side file is carried over to the new id.
        """
        self.outbox_id, previous = await asyncio.to_thread(opening.fork, self.path, why)
        self._opened = self._opened._replace(outbox_id=self.outbox_id, previous=list(previous))
        return self.outbox_id

    async def last_unshipped_within(self, after: int, upto: int) -> Event | None:
        """Return the last event with ``after < seq <= upto`` that is not a dead letter, if any."""
        rows = await self._all(
            f"SELECT {_EVENT_COLUMNS} FROM events e WHERE e.seq > ? AND e.seq <= ? AND {NOT_SET_ASIDE}"
            " ORDER BY e.seq DESC LIMIT 1",
            (after, upto),
        )
        return Event(*rows[0]) if rows else None

    async def close(self) -> None:
        """Close the connection."""
        self._closed = True
        db, self._db = self._db, None
        inline, self._inline = self._inline, None
        if inline is not None:
            inline.close()
        if db is not None:
            await db.close()

    async def __aenter__(self) -> OutboxReader:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._db is not None:
            _warn(f"OutboxReader {self.path} was never closed", ResourceWarning, source=self)

    @property
    def db(self) -> aiosqlite.Connection:
        """The open connection (events file as ``main``, side file as ``ship``)."""
        if self._db is None:
            raise self._not_open()
        return self._db

    def _not_open(self) -> OutboxClosedError:
        return OutboxClosedError(f"reader of {self.path} is {'closed' if self._closed else 'not open'}")

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        rows = await self._all(sql, params)
        return rows[0][0] if rows else None

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        # One hop to aiosqlite's thread (execute_fetchall), not three (execute, fetchall, close):
        # the shipper reads every batch through here.
        try:
            return list(await self.db.execute_fetchall(sql, params))
        except sqlite3.Error as exc:
            raise _error(self.path, exc) from None

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        await self._materialize()
        try:
            async with self.db.execute(sql, params) as cur:
                return int(cur.rowcount)
        except sqlite3.Error as exc:
            raise _error(self.path, exc) from None

    async def _write_many(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._materialize()
        try:
            await self.db.executemany(sql, rows)
        except sqlite3.Error as exc:  # a full disk, say: the shipper must see an OutboxError
            raise _error(self.path, exc) from None

    # -- shipping --------------------------------------------------------------------------------

    async def cursor(self) -> int:
        """Return the highest seq such that everything at or below it is shipped or set aside."""
        return int(await self._one("SELECT cursor FROM ship.progress WHERE one = 1") or 0)

    async def last_seq(self) -> int:
        """Return the highest seq in the events file (0 when empty)."""
        return int(await self._one("SELECT max(seq) FROM events") or 0)

    async def read_pending(self, limit: int, after: int | None = None, *, on_loop: bool = False) -> EventRows:
        """Return up to ``limit`` events past ``after`` (default: the cursor), in seq order, as
        the rows read (:class:`outbox.EventRows`: a sequence of events, made as they are asked for).

        ``on_loop``: read on the event loop's own thread, 256 rows at a time with a yield
        between, instead of on aiosqlite's. For a shipper's read-ahead, which runs while the
        loop waits for Postgres: in a thread it competes for the GIL with the COPY next to it.
        A lone read (a trickle of events in a bot) is better off in the thread, which leaves
        the loop free for commands.
        """
        if after is None:
            after = await self.cursor()
        if not on_loop:
            return EventRows(await self._all(_PENDING, (after, limit)))
        inline = self._inline
        if inline is None:
            raise self._not_open()
        rows: list[EventRow] = []
        try:
            cur = inline.execute(_PENDING, (after, limit))
            try:
                while chunk := cur.fetchmany(_INLINE_CHUNK):
                    rows += chunk
                    if len(chunk) < _INLINE_CHUNK:
                        break
                    await asyncio.sleep(0)  # let the loop send, receive, serve commands
            finally:
                with contextlib.suppress(sqlite3.Error):  # closed under us: the error above says so
                    cur.close()  # ends the read transaction, even if cancelled halfway
        except sqlite3.Error as exc:
            raise _error(self.path, exc) from None
        return EventRows(rows)

    async def advance(self, cursor: int) -> None:
        """Record that everything up to ``cursor`` is shipped; never moves the cursor back.

        Also marks when (see :mod:`outbox.shipclock`): the latest mark moves up while the
        one before it is under a minute old, else a new one starts, so marks a minute apart
        stay behind while shipping goes on; retention counts from them. (The latest mark used
        to move up while *it* was under a minute old: moving made it new again, so a bot that
        never paused for a minute kept one mark, always fresh, and pruned nothing by age.)
        """
        wall, boot, boot_us = shipclock.now()
        c, wall, boot_us = int(cursor), int(wall), int(boot_us)
        b = "'" + str(boot).replace("'", "''") + "'"
        # One transaction in one hop to aiosqlite's thread: as three statements, each its own
        # execute and cursor close, a note cost ~450 us of the process's CPU (the shipper notes
        # ten times a second). A script takes no parameters: the values are ints and a quoted string.
        script = (
            "BEGIN;"
            f" UPDATE ship.progress SET cursor = max(cursor, {c}), updated_at = {wall} WHERE one = 1;"
            # the latest mark moves up while the one before it (this boot's) is under a minute old
            f" UPDATE ship.shipped_at SET cursor = {c}, wall_us = {wall}, boot_us = {boot_us}"
            f" WHERE cursor = (SELECT max(cursor) FROM ship.shipped_at) AND cursor < {c} AND boot = {b}"
            f" AND (SELECT CASE WHEN p.boot = {b} THEN p.boot_us END FROM ship.shipped_at p"
            f"      WHERE p.cursor < (SELECT max(cursor) FROM ship.shipped_at) ORDER BY p.cursor DESC LIMIT 1)"
            f"     > {boot_us - shipclock.MARK_EVERY_US};"
            # no mark moved up (changes() counts the statement just before): a new one starts
            f" INSERT OR IGNORE INTO ship.shipped_at(cursor, wall_us, boot, boot_us) SELECT {c}, {wall}, {b}, {boot_us}"
            f" WHERE changes() = 0 AND {c} > (SELECT coalesce(max(cursor), -1) FROM ship.shipped_at);"
            " COMMIT;"
        )
        await self._materialize()
        try:
            await self.db.executescript(script)
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):  # a statement failed halfway: end the transaction
                await self.db.execute("ROLLBACK")
            raise _error(self.path, exc) from None

    async def set_cursor(self, cursor: int) -> None:
        """Set the cursor exactly (operators' repair; the shipper uses :meth:`advance`)."""
        await self._write("UPDATE ship.progress SET cursor = ?, updated_at = ? WHERE one = 1", (cursor, _now_us()))

    async def set_aside(self, failures: Iterable[tuple[Event, str]]) -> int:
        """Record events as dead letters with the error that refused them; return how many."""
        now = _now_us()
        rows = [(ev.seq, ev.id, ev.topic, error, now) for ev, error in failures]
        if not rows:
            return 0
        await self._materialize()
        try:
            # synced before this returns, power loss or not: the shipper sets events aside
            # before Postgres commits the batch that skips them, and nothing else records them
            await self.db.execute("PRAGMA ship.synchronous = FULL")
            try:
                await self.db.executemany(
                    "INSERT INTO ship.dead(seq, id, topic, error, status, attempts, failed_at)"
                    " VALUES (?, ?, ?, ?, 'dead', 1, ?)"
                    " ON CONFLICT(seq) DO UPDATE SET error = excluded.error, status = 'dead',"
                    " attempts = attempts + 1, failed_at = excluded.failed_at",
                    rows,
                )
            finally:
                await self.db.execute(opening.SHIP_SYNCHRONOUS)
        except sqlite3.Error as exc:
            raise _error(self.path, exc) from None
        return len(rows)

    async def set_aside_unreadable(self, limit: int, after: int | None = None) -> list[tuple[Event, str]]:
        """Set aside, as dead letters, the events a :meth:`read_pending` of the same arguments
        cannot read: those whose text is not valid UTF-8 (:class:`~outbox.OutboxTextError`).
        Returns them with why, each naming the column and the first bad byte; their id and topic
        are shown with U+FFFD for bytes that are not UTF-8, and their payload is left out.

        What a shipper does when a read fails so: every event after a damaged one would
        otherwise wait for ever, the read failing on every retry.
        """
        if after is None:
            after = await self.cursor()
        return await self._set_aside_unreadable(_PENDING_RAW, (after, limit))

    async def _set_aside_unreadable(self, raw_sql: str, params: Sequence[Any]) -> list[tuple[Event, str]]:
        """Set aside the rows of ``raw_sql`` (a query of ``_RAW_COLUMNS``) whose text is not UTF-8."""
        found = [
            (_shown(row), "event set aside unread: " + problems)
            for row in await self._all(raw_sql, params)
            if (problems := _problems(row[1:4]))
        ]
        await self.set_aside(found)
        return found

    async def read_retries(self, limit: int) -> list[Event]:
        """Return dead letters an operator marked for retry, oldest first.

        One whose text is not valid UTF-8 (see :meth:`set_aside_unreadable`) cannot be retried:
        it is marked dead again, with why, and the others are returned.
        """
        try:
            rows = await self._all(_RETRIES, (limit,))
        except OutboxTextError:
            await self._set_aside_unreadable(_RETRIES_RAW, (limit,))
            rows = await self._all(_RETRIES, (limit,))
        return [Event(*row) for row in rows]

    async def resolve(self, seqs: Sequence[int]) -> None:
        """Forget dead letters that have now shipped."""
        if seqs:
            await self._write_many("DELETE FROM ship.dead WHERE seq = ?", [(s,) for s in seqs])

    async def set_error(self, error: str | None) -> None:
        """Remember the last shipping error (``None`` clears it) for ``outbox status``."""
        if error is None:
            await self._write("DELETE FROM ship.meta WHERE key IN ('last_error', 'last_error_at')")
            return
        await self._write_many(
            "INSERT OR REPLACE INTO ship.meta(key, value) VALUES (?, ?)",
            [("last_error", error[:2000]), ("last_error_at", str(_now_us()))],
        )

    async def used_bytes(self) -> int:
        """Return what ``max_bytes`` limits: the events file's pages in use and every other file."""
        rows = await self._all(
            "SELECT (SELECT page_count FROM pragma_page_count()) - (SELECT freelist_count FROM pragma_freelist_count()),"
            " (SELECT page_size FROM pragma_page_size())"
        )
        return int(rows[0][0]) * int(rows[0][1]) + schema.side_bytes(self.path)

    async def meta(self, key: str) -> str | None:
        """Return a value from the events file's meta table (e.g. ``max_bytes``)."""
        value = await self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return None if value is None else str(value)

    # -- dead letters ----------------------------------------------------------------------------

    async def dead_letters(
        self, *, topic: str | None = None, ids: Sequence[str] = (), include_retry: bool = True
    ) -> list[DeadLetter]:
        """Return dead letters, optionally of one topic or with given ids."""
        where, params = self._dead_filter(topic, ids, ("dead", "retry") if include_retry else ("dead",))
        rows = await self._all(
            f"SELECT seq, id, topic, error, status, attempts, failed_at FROM ship.dead WHERE {where} ORDER BY seq",
            params,
        )
        return [DeadLetter(*row) for row in rows]

    async def retry_dead(self, *, topic: str | None = None, ids: Sequence[str] = ()) -> int:
        """Mark dead letters for another attempt; the shipper picks them up. Return how many."""
        where, params = self._dead_filter(topic, ids, ("dead",))
        return await self._write(f"UPDATE ship.dead SET status = 'retry' WHERE {where}", params)

    async def drop_dead(self, *, topic: str | None = None, ids: Sequence[str] = ()) -> int:
        """Delete dead letters and their events for good. Return how many."""
        where, params = self._dead_filter(topic, ids, ("dead", "retry"))
        await self._materialize()
        db = self.db
        try:
            await db.execute("BEGIN IMMEDIATE")
            seqs = [r[0] for r in await db.execute_fetchall(f"SELECT seq FROM ship.dead WHERE {where}", params)]
            top = int(list(await db.execute_fetchall("SELECT max(seq) FROM events"))[0][0] or 0)
            # the row holding the highest seq stays (see outbox.schema); a tombstone keeps it unshipped
            gone = [(s,) for s in seqs if s != top]
            await db.executemany("DELETE FROM events WHERE seq = ?", gone)
            await db.executemany("DELETE FROM ship.dead WHERE seq = ?", gone)
            await db.executemany("UPDATE ship.dead SET status = 'dropped' WHERE seq = ?", [(s,) for s in seqs if s == top])
            await db.execute("COMMIT")
        except BaseException as exc:
            if db.in_transaction:
                await db.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise _error(self.path, exc) from None
            raise
        return len(seqs)

    @staticmethod
    def _dead_filter(topic: str | None, ids: Sequence[str], statuses: Sequence[str]) -> tuple[str, list[Any]]:
        clauses = [f"status IN ({', '.join('?' for _ in statuses)})"]
        params: list[Any] = list(statuses)
        if topic is not None:
            clauses.append("topic = ?")
            params.append(topic)
        if ids:
            clauses.append(f"id IN ({', '.join('?' for _ in ids)})")
            params.extend(ids)
        return " AND ".join(clauses), params

    # -- status ----------------------------------------------------------------------------------

    async def status(self, *, per_topic: bool = False) -> Status:
        """Count pending, shipped and dead events; ``per_topic`` scans the whole file."""
        return await status.count(self.path, self._one, self._all, await self.cursor(), await self.last_seq(), per_topic)

    # -- ranges ----------------------------------------------------------------------------------

    async def iter_events(
        self,
        *,
        since_us: int | None = None,
        until_us: int | None = None,
        topic: str | None = None,
        shipped_only: bool = False,
        skip_set_aside: bool = False,
        chunk: int = 1000,
        unreadable: Callable[[Event, str], object] | None = None,
    ) -> AsyncIterator[list[Event]]:
        """Yield events in seq order, in chunks, filtered by creation time and topic.

        Memory stays bounded whatever the file's size: each chunk is a keyset query from the
        last seq seen. ``skip_set_aside`` leaves out dead letters (and dropped ones);
        ``shipped_only`` yields only events shipped so far (never a dead letter).

        A row whose text is not valid UTF-8 cannot be read as an event, and sqlite3 then fails
        the whole chunk. The chunk is read again as bytes: with ``unreadable``, each such row is
        handed to it (as :meth:`set_aside_unreadable` shows one: id and topic with U+FFFD for
        the bad bytes, no payload; and why, naming the column and the byte) and the others are
        yielded; without, :class:`~outbox.OutboxTextError` names the first. Either way the row
        is not skipped in silence.
        """
        clauses: list[str] = ["e.seq > ?"]
        params: list[Any] = [0]
        if since_us is not None:
            clauses.append("e.created_at >= ?")
            params.append(since_us)
        if until_us is not None:
            clauses.append("e.created_at < ?")
            params.append(until_us)
        if topic is not None:
            clauses.append("e.topic = ?")
            params.append(topic)
        if shipped_only:
            clauses.append("e.seq <= (SELECT cursor FROM ship.progress WHERE one = 1)")
        if shipped_only or skip_set_aside:
            clauses.append(NOT_SET_ASIDE)
        sql = f"SELECT {_EVENT_COLUMNS} FROM events e WHERE {' AND '.join(clauses)} ORDER BY e.seq LIMIT ?"
        after = 0
        while True:
            params[0] = after
            try:
                rows = await self._all(sql, [*params, chunk])
                events = [Event(*row) for row in rows]
            except OutboxTextError:
                rows = await self._all(sql.replace(_EVENT_COLUMNS, _RAW_COLUMNS, 1), [*params, chunk])
                events = _readable(self.path, rows, unreadable)
            if not rows:
                return
            if events:
                yield events
            after = int(rows[-1][0])  # past the unreadable rows too

    async def count_events(
        self, *, since_us: int | None = None, until_us: int | None = None, topic: str | None = None
    ) -> int:
        """Count the events :meth:`iter_events` would yield (for progress bars)."""
        clauses, params = ["1"], []
        for clause, value in (("created_at >= ?", since_us), ("created_at < ?", until_us), ("topic = ?", topic)):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        return int(await self._one(f"SELECT count(*) FROM events WHERE {' AND '.join(clauses)}", params))


_error = opening.error
