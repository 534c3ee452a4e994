"""Opening an outbox for reading: its identity, its side file, and the connections over both.

A reader that ships (``create=True``) may change the files it opens: it forks a copy to a new
identity (:mod:`outbox.identity`) and makes the ``PATH-ship`` side file. A reader that only
looks (``outbox status``, ``export``, ``dead list``) changes nothing: with no side file yet, an
empty one in memory stands in until its first write (:func:`materialize`).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import aiosqlite

from . import identity, readonly, schema
from .errors import OutboxError, OutboxFullError, OutboxTextError, disk_is_full

__all__ = ["Opened", "prepare", "connect", "connect_inline", "materialize", "fork", "error"]

WAL_KEEP_BYTES = 256 * 1024


class Opened(NamedTuple):
    """What :func:`prepare` found: the outbox's id, the ids it had before, no side file yet, no write access."""

    outbox_id: str
    previous: list[str]
    side_missing: bool
    read_only: bool = False


def error(path: Path, exc: sqlite3.Error, what: str = "outbox") -> OutboxError:
    """Translate a sqlite3 error met reading or noting progress, naming the file."""
    if disk_is_full(exc, path):
        return OutboxFullError(f"the disk holding outbox {path} is full")
    if isinstance(exc, sqlite3.OperationalError) and str(exc).startswith("Could not decode to UTF-8"):
        return OutboxTextError(f"{what} {path}: {exc}")
    return OutboxError(f"{what} {path}: {exc}")


def prepare(path: Path, create: bool) -> Opened:
    """Check both files before connecting; a shipper's (``create``) forks a copy and makes the side file."""
    ship = schema.ship_path(path)
    if not create and not (readonly.can_write(path) and (not ship.exists() or readonly.can_write(ship))):
        return _prepare_read_only(path)
    events = schema.connect_events(path, create=create)
    try:
        found = schema.outbox_id_of(events, path)  # a file with no id is damaged
        if not create:
            # only looking (status, export, dead list ...): no fork, no side file made; the
            # shipper (create=True) and the appenders do those
            previous = identity.previous_ids(events)
            schema.check_shipped_within(events, path, found, previous)
            side_missing = not schema.ship_path(path).exists()
            if not side_missing:
                schema.connect_ship(path, found, previous).close()
            return Opened(found, previous, side_missing)
        try:
            outbox_id = identity.ensure_identity(events, path)  # a copy forks here
            if not schema.ship_path(path).exists() and identity.had_side_file(events):
                # its cursor and dead letters are gone: Postgres's ledger would skip the
                # dead letters as shipped. A new identity re-sends what the file holds,
                # and what Postgres refuses becomes a dead letter again.
                outbox_id = identity.fork(
                    events, path, f"its side file {schema.ship_path(path)} (progress, dead letters) is missing"
                )
            previous = identity.previous_ids(events)
        except sqlite3.Error as exc:
            raise error(path, exc) from None
        schema.check_shipped_within(events, path, outbox_id, previous)
        schema.connect_ship(path, outbox_id, previous).close()
        try:
            identity.note_side_file(events)
        except sqlite3.Error:
            pass  # read-only: the next writer notes it
    finally:
        events.close()
    return Opened(outbox_id, previous, False)


def _prepare_read_only(path: Path) -> Opened:
    """Check the files without writing a byte: a user who can only read them, or a read-only mount."""
    if (refused := readonly.unreadable_wal(path)) is not None:
        raise refused
    events = schema.connect_events(path, create=False, read_only=True)
    try:
        found = schema.outbox_id_of(events, path)
        previous = identity.previous_ids(events)
        schema.check_shipped_within(events, path, found, previous)
    except sqlite3.Error as exc:
        raise error(path, exc, "cannot read outbox") from None
    finally:
        events.close()
    ship = schema.ship_path(path)
    side_id = None
    if ship.exists():
        try:
            conn = sqlite3.connect(readonly.uri(ship), uri=True, timeout=schema.BUSY_TIMEOUT_MS / 1000)
            try:
                side_id = conn.execute("SELECT value FROM meta WHERE key = 'outbox_id'").fetchone()
            finally:
                conn.close()
        except sqlite3.Error as exc:
            raise error(ship, exc, "cannot read side file") from None
    # a side file of another outbox (the events file was replaced) is not this one's: a writer
    # moves it aside; a reader without write access leaves it and reads an empty one instead
    ours = side_id is not None and side_id[0] in (found, *previous)
    return Opened(found, previous, side_missing=not ours, read_only=True)


async def connect(path: Path, opened: Opened) -> aiosqlite.Connection:
    """Connect to the events file as ``main`` and the side file (or its stand-in) as ``ship``."""
    ro = opened.read_only
    db = await aiosqlite.connect(
        readonly.uri(path) if ro else path, isolation_level=None, timeout=schema.BUSY_TIMEOUT_MS / 1000, uri=ro
    )
    try:
        await db.execute(f"PRAGMA busy_timeout = {schema.BUSY_TIMEOUT_MS}")
        await db.execute("PRAGMA wal_autocheckpoint = 0")
        await _attach_ship(db, path, opened)
        # when this connection's write starts a WAL over, the file is cut back: max_bytes counts it
        await db.execute(f"PRAGMA main.journal_size_limit = {WAL_KEEP_BYTES}")
        await db.execute(f"PRAGMA ship.journal_size_limit = {WAL_KEEP_BYTES // 4}")
    except sqlite3.Error as exc:
        await db.close()
        raise error(path, exc, "cannot open outbox") from None
    except BaseException:
        await db.close()
        raise
    return db


# An attached database syncs as FULL whatever the connection's main one does: in WAL mode, an
# fsync of the side file's WAL at every commit, three per cursor note, ten notes a second. The
# cursor needs none (one lost with the machine's power is found again in Postgres's ledger):
# an in-process shipper at 1,000 appends/s fsynced the side file 70 times in 4 s, 6 with
# NORMAL (strace; the CPU this saves the bot is within the noise of a 6 s run). Dead letters,
# which nothing else records, are still written FULL (OutboxReader.set_aside).
SHIP_SYNCHRONOUS = "PRAGMA ship.synchronous = NORMAL"


async def _attach_ship(db: aiosqlite.Connection, path: Path, opened: Opened) -> None:
    if not opened.side_missing:
        await db.execute("ATTACH DATABASE ? AS ship", (_ship_name(path, opened),))
        await db.execute(SHIP_SYNCHRONOUS)
        return
    # Only looking (create=False) at an outbox never shipped: an empty side file in memory,
    # so `outbox status` and `export` create and change nothing (nothing has shipped, and
    # there are no dead letters to list). The first write makes the real one (materialize).
    await db.execute("ATTACH DATABASE ':memory:' AS ship")
    await db.executescript(schema.empty_ship_script())


def _ship_name(path: Path, opened: Opened) -> str:
    ship = schema.ship_path(path)
    return readonly.uri(ship) if opened.read_only else str(ship)


def connect_inline(path: Path, opened: Opened) -> sqlite3.Connection:
    """Connect for ``read_pending(on_loop=True)``: read-only use, on the loop's own thread."""
    # Never shared between two threads at once (each read runs to its end on the loop's
    # thread), hence check_same_thread=False for a loop that moves threads.
    try:
        ro = opened.read_only
        conn = sqlite3.connect(readonly.uri(path) if ro else path, isolation_level=None, check_same_thread=False, uri=ro)
    except sqlite3.Error as exc:
        raise error(path, exc, "cannot open outbox") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {schema.BUSY_TIMEOUT_MS}")
        if opened.side_missing:
            conn.execute("ATTACH DATABASE ':memory:' AS ship")
            conn.executescript(schema.empty_ship_script())
        else:
            conn.execute("ATTACH DATABASE ? AS ship", (_ship_name(path, opened),))
    except sqlite3.Error as exc:
        conn.close()
        raise error(path, exc, "cannot open outbox") from None
    except BaseException:
        conn.close()
        raise
    return conn


async def materialize(
    path: Path, opened: Opened, db: aiosqlite.Connection, inline: sqlite3.Connection | None
) -> None:
    """Before a looking reader's first write: make the real side file and attach it in place of the stand-in."""
    if opened.read_only:
        raise readonly.write_refused(schema.ship_path(path), path) or OutboxError(f"outbox {path} is read-only here")
    await asyncio.to_thread(lambda: schema.connect_ship(path, opened.outbox_id, opened.previous).close())
    side = str(schema.ship_path(path))
    try:
        await db.execute("DETACH DATABASE ship")
        await db.execute("ATTACH DATABASE ? AS ship", (side,))
        await db.execute(SHIP_SYNCHRONOUS)
        await db.execute(f"PRAGMA ship.journal_size_limit = {WAL_KEEP_BYTES // 4}")
        if inline is not None:
            inline.execute("DETACH DATABASE ship")
            inline.execute("ATTACH DATABASE ? AS ship", (side,))
    except sqlite3.Error as exc:
        raise error(path, exc) from None


def fork(path: Path, why: str) -> tuple[str, Sequence[str]]:
    """Give the outbox at ``path`` a new id, its side file carried over; return the id and the ones before."""
    try:
        events = schema.connect_events(path, create=False)
        try:
            outbox_id = identity.fork(events, path, why)
            previous = identity.previous_ids(events)
        finally:
            events.close()
        schema.connect_ship(path, outbox_id, previous).close()
    except sqlite3.Error as exc:
        raise error(path, exc) from None
    return outbox_id, previous
