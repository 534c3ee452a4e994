"""The on-disk layout: two SQLite files, created 0600, versioned, recognisable.

``PATH`` holds the events and is written only by appenders (and, rarely, by pruning), so an
appender never waits on a lock held by the shipper. ``PATH-ship`` holds the shipper's side of
things -- how far shipping has got, the dead letters, the last error -- so marking a batch as
shipped never takes the events file's write lock.

Event ``seq`` is SQLite's rowid: commits are serialised by SQLite's write lock and the rowid is
``max + 1`` inside that lock, so a reader that has seen ``seq = n`` will never later see a new row
below ``n``. ``AUTOINCREMENT`` would guarantee the same after deletes but costs ~35% of an append;
instead, nothing ever deletes the row holding the highest ``seq``.
"""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from . import readonly, shipclock
from .errors import NotAnOutboxError, OutboxCorruptError, OutboxError, OutboxFullError, disk_is_full

__all__ = [
    "APPLICATION_ID",
    "outbox_id_of",
    "SCHEMA_VERSION",
    "ship_path",
    "side_bytes",
    "SIDE_SUFFIXES",
    "connect_events",
    "connect_ship",
    "create_private_file",
    "check_shipped_within",
]

APPLICATION_ID = 0x4F425831  # "OBX1" in the SQLite header: marks a file as ours
SCHEMA_VERSION = 1
SHIP_SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000

_EVENTS_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,      -- rowid: commit order, never reused
    id TEXT NOT NULL,             -- UUIDv7, unique by construction (Postgres's key refuses twins)
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,        -- JSON text, already checked to be valid for Postgres jsonb
    created_at INTEGER NOT NULL   -- microseconds since the Unix epoch, UTC
);
"""

_SHIP_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS progress (
    one INTEGER PRIMARY KEY CHECK (one = 1),
    cursor INTEGER NOT NULL,      -- every event with seq <= cursor is shipped or a dead letter
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS dead (
    seq INTEGER PRIMARY KEY,      -- the event's seq in the events file
    id TEXT NOT NULL,
    topic TEXT NOT NULL,
    error TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('dead', 'retry', 'dropped')),
    attempts INTEGER NOT NULL DEFAULT 1,
    failed_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dead_status ON dead(status);
"""


SIDE_SUFFIXES = ("-wal", "-shm", "-ship", "-ship-wal", "-ship-shm")


def side_bytes(path: str | os.PathLike[str]) -> int:
    """Return the bytes the outbox's files other than the events file take (WALs, side file)."""
    total = 0
    for suffix in SIDE_SUFFIXES:
        try:
            total += os.stat(f"{os.fspath(path)}{suffix}").st_size
        except FileNotFoundError:
            pass
    return total


def empty_ship_script(name: str = "ship") -> str:
    """SQL laying out an empty side file in the attached database ``name`` (a ``:memory:`` stand-in)."""
    script = f"{_SHIP_DDL};{shipclock.DDL};INSERT INTO progress(one, cursor, updated_at) VALUES (1, 0, 0);"
    script = script.replace("CREATE TABLE IF NOT EXISTS ", f"CREATE TABLE IF NOT EXISTS {name}.")
    script = script.replace("CREATE INDEX IF NOT EXISTS ", f"CREATE INDEX IF NOT EXISTS {name}.")
    return script.replace("INSERT INTO progress", f"INSERT INTO {name}.progress")


def ship_path(path: str | os.PathLike[str]) -> Path:
    """Return the path of the shipper's side file for the outbox at ``path``."""
    return Path(f"{os.fspath(path)}-ship")


def create_private_file(path: Path, like: Path | None = None) -> bool:
    """Create ``path`` empty with mode 0600 unless it exists; return True if it was created.

    SQLite gives its ``-wal`` and ``-shm`` files the mode of the main file, so this is the one
    place that decides who can read the events. A side file (``like`` the events file) gets the
    events file's mode and, where this process may give it (root), its owner: ``outbox status``
    run as root once left a root-owned ``-ship`` behind, and the bot's own user could no longer ship.
    """
    mode, owner = 0o600, None
    if like is not None:
        try:
            st = os.stat(like)
            mode, owner = st.st_mode & 0o666, (st.st_uid, st.st_gid)
        except OSError:
            pass
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    except FileExistsError:
        return False
    except OSError as exc:
        raise OutboxError(f"cannot create outbox file {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, mode)  # not narrowed by the umask
        if owner is not None and owner != (os.geteuid(), os.getegid()):
            try:
                os.fchown(fd, *owner)
            except PermissionError:
                pass  # not root: the file is ours, as the events file's own user would make it
    finally:
        os.close(fd)
    return True


def _connect(
    path: Path, *, create: bool, synchronous: str, like: Path | None = None, read_only: bool = False
) -> sqlite3.Connection:
    if not create and not path.exists():
        raise OutboxError(f"no outbox at {path}")
    if path.is_dir():
        raise OutboxError(f"{path} is a directory, not an outbox file")
    if create:
        create_private_file(path, like)
        # SQLite would open it read-only without a word and fail at the first write
        if (refused := readonly.write_refused(path)) is not None:
            raise refused
    try:
        conn = sqlite3.connect(
            readonly.uri(path) if read_only else path,
            isolation_level=None,
            check_same_thread=False,
            timeout=BUSY_TIMEOUT_MS / 1000,
            uri=read_only,
        )
    except sqlite3.Error as exc:
        raise OutboxError(f"cannot open outbox {path}: {exc}") from None
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise _damaged(path, exc) from None
    return conn


def _damaged(path: Path, exc: sqlite3.Error) -> OutboxError:
    if disk_is_full(exc, path):
        return OutboxFullError(f"the disk holding outbox {path} is full")
    text = str(exc)
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return OutboxCorruptError(f"outbox {path} is damaged or not a SQLite file ({text})")
    return OutboxError(f"outbox {path}: {text}")


def _header(conn: sqlite3.Connection) -> tuple[int, int, int]:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    return app_id, version, tables


def _ensure(
    conn: sqlite3.Connection, path: Path, ddl: str, version: int, extra_meta: dict[str, str]
) -> None:
    """Check the header; lay out a new file inside one write transaction (several processes may race)."""
    try:
        app_id, found, tables = _header(conn)
        if app_id == APPLICATION_ID and found == version:
            return
        if app_id == 0 and tables == 0:
            if conn.execute("PRAGMA journal_mode = WAL").fetchone()[0].lower() != "wal":
                raise OutboxError(f"outbox {path}: the filesystem does not support SQLite WAL mode")
            conn.execute("BEGIN IMMEDIATE")
            try:
                app_id, found, tables = _header(conn)
                if app_id == 0 and tables == 0:
                    for statement in ddl.split(";"):  # not executescript: it would COMMIT
                        if statement.strip():
                            conn.execute(statement)
                    meta = {"created_at": str(time.time_ns() // 1000), **extra_meta}
                    conn.executemany("INSERT OR IGNORE INTO meta(key, value) VALUES (?, ?)", meta.items())
                    conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                    conn.execute(f"PRAGMA user_version = {version}")
                    app_id, found = APPLICATION_ID, version
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        if app_id != APPLICATION_ID:
            raise NotAnOutboxError(f"{path} is a SQLite database but not an outbox")
        if found > version:
            raise OutboxError(
                f"outbox {path} has schema version {found}; this release reads up to {version}: upgrade"
            )
        if found < version:  # no older layouts exist yet; migrations go here when they do
            raise OutboxError(f"outbox {path} has unknown schema version {found}")
    except sqlite3.DatabaseError as exc:
        raise _damaged(path, exc) from None


def connect_events(
    path: str | os.PathLike[str], *, create: bool = True, synchronous: str = "NORMAL", read_only: bool = False
) -> sqlite3.Connection:
    """Open (creating if asked) the events file, checked and in WAL mode, autocommit.

    ``read_only``: for a looker without write access (see :mod:`outbox.readonly`).
    """
    p = Path(path)
    _check_not_emptied(p)
    conn = _connect(p, create=create, synchronous=synchronous, read_only=read_only)
    try:
        _ensure(conn, p, _EVENTS_DDL, SCHEMA_VERSION, {"outbox_id": str(uuid.uuid4())})
    except BaseException:
        conn.close()
        raise
    return conn


def connect_ship(
    path: str | os.PathLike[str], outbox_id: str, previous: Sequence[str] = ()
) -> sqlite3.Connection:
    """Open the shipper's side file of the outbox at ``path``, creating it if needed.

    A side file left over from another outbox (the events file was replaced) is moved aside
    rather than trusted: its cursor would mark the new file's events as already shipped. One
    of an id the outbox had before it forked (``previous``, see :mod:`outbox.identity`) is the
    same file's and is carried over to the new id.
    """
    p = ship_path(path)
    conn = _connect(p, create=True, synchronous="NORMAL", like=Path(path))
    try:
        _ensure(conn, p, _SHIP_DDL, SHIP_SCHEMA_VERSION, {"outbox_id": outbox_id})
        row = conn.execute("SELECT value FROM meta WHERE key = 'outbox_id'").fetchone()
        if row is not None and row[0] != outbox_id and row[0] in previous:
            conn.execute("UPDATE meta SET value = ? WHERE key = 'outbox_id'", (outbox_id,))
            row = (outbox_id,)
        if row is None or row[0] != outbox_id:
            conn.close()
            aside = p.with_name(f"{p.name}.orphan-{int(time.time())}")
            for suffix in ("", "-wal", "-shm"):
                src = Path(f"{p}{suffix}")
                if src.exists():
                    src.rename(Path(f"{aside}{suffix}"))
            return connect_ship(path, outbox_id, previous)
        conn.execute(
            "INSERT OR IGNORE INTO progress(one, cursor, updated_at) VALUES (1, 0, ?)",
            (time.time_ns() // 1000,),
        )
        shipclock.ensure(conn)
    except sqlite3.DatabaseError as exc:
        conn.close()
        raise _damaged(p, exc) from None
    except BaseException:
        conn.close()
        raise
    return conn


def outbox_id_of(conn: sqlite3.Connection, path: str | os.PathLike[str] = "") -> str:
    """Return the id written into the events file when it was created."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'outbox_id'").fetchone()
    except sqlite3.DatabaseError as exc:  # the header was sound but the pages after it are not
        raise _damaged(Path(path), exc) from None
    if row is None:
        raise OutboxCorruptError(f"outbox {path} has no id in its meta table" if path else "outbox has no id in its meta table")
    return str(row[0])


def _check_not_emptied(path: Path) -> None:
    """Refuse an events file cut to zero bytes: SQLite would take it for a new, empty database.

    A side file exists only once its events file has been laid out, so an empty events file
    beside a non-empty side file has lost everything it held.
    """
    try:
        emptied = path.stat().st_size == 0 and ship_path(path).stat().st_size > 0
    except OSError:
        return
    if emptied:
        raise OutboxCorruptError(
            f"outbox {path} is empty, but its side file {ship_path(path).name} shows it held events (was it truncated?)"
        )


def check_shipped_within(
    conn: sqlite3.Connection, path: str | os.PathLike[str], outbox_id: str, previous: Sequence[str] = ()
) -> None:
    """Refuse an events file that ends below what its side file records as shipped.

    The row holding the highest seq is never deleted, so the file can only end below the
    shipping cursor if it lost its tail: its ``-wal`` deleted, or the file restored from an
    older copy. New events would then reuse seqs at or below the cursor and be skipped as
    already shipped, so this is damage, not something to carry on from.
    """
    side = ship_path(path)
    if not side.exists():
        return
    try:  # not read-only: after a crash, reading the side file's WAL needs a recovery write
        if readonly.can_write(side):
            ship = sqlite3.connect(side, timeout=BUSY_TIMEOUT_MS / 1000)
        else:  # a looker without write access: no recovery is needed to read through a -shm
            ship = sqlite3.connect(readonly.uri(side), timeout=BUSY_TIMEOUT_MS / 1000, uri=True)
        try:
            row = ship.execute(
                "SELECT (SELECT value FROM meta WHERE key = 'outbox_id'), (SELECT cursor FROM progress WHERE one = 1)"
            ).fetchone()
        finally:
            ship.close()
    except sqlite3.Error:
        return  # a damaged side file is the shipper's to report; the events themselves are fine
    if row is None or (row[0] != outbox_id and row[0] not in previous) or row[1] is None:
        return
    try:
        last = int(conn.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])
    except sqlite3.DatabaseError as exc:
        raise _damaged(Path(path), exc) from None
    if int(row[1]) > last:
        raise OutboxCorruptError(
            f"outbox {path} has lost events: it ends at seq {last} but its side file records seq {row[1]}"
            " as shipped (was its -wal file deleted, or the file restored from an older copy?)"
        )
