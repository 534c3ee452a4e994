"""The append path: the only code a command runs to record an event.

With ``durability="process"`` an append is one autocommit INSERT executed right here on the
event loop's thread. That sounds wrong for asyncio, but the whole WAL commit costs less than the
hop to a worker thread would (aiosqlite's hop is ~100 us; the commit ~10-30 us), and once it
returns the row is in the WAL, which the OS keeps even if the process is killed.

With ``durability="power"`` the WAL must reach the platter, which costs an fsync (~0.3-3 ms).
Appends then queue up and one writer thread commits everything queued so far in a single
transaction with one fsync: concurrent appenders share the cost (group commit).

WAL checkpoints never run on the appending connection (``wal_autocheckpoint = 0``): a side
thread runs a PASSIVE checkpoint every ``checkpoint_every`` appends, which never blocks writers.
PASSIVE alone never lets the WAL start over while appends keep coming (one appender flat out
took it to 4 GB in 15 s), so once the WAL holds more than its bound the same thread follows with
a RESTART: it copies the few frames appended since the PASSIVE, waits up to ``_RESTART_WAIT_MS``
for readers, and the next append starts the WAL from its beginning, cut back to its size limit.
Appenders wait for that (a few ms, a few times a minute at most at 5,000 appends/s); see bench
``append`` for what it costs the tail.

Appends faster than the disk takes them (a bulk load flat out, ~30,000 a second) outrun even
that: a checkpoint's fsync then stalls for as long as the disk needs to write what the appender
put in the page cache (1.7 s seen on a shared 2-core host), and the WAL grew meanwhile, to
150-475 MiB of a 64 MiB bound. So an append that finds the WAL past 1.5 times its bound waits
for the checkpoint to finish and for one that starts the WAL over (``_catch_up``): the appender
is held to the disk's pace. A bot's appends never get there.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import fcntl
import itertools
import logging
import os
import sqlite3
import time
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, TypeVar

from . import identity, schema
from .errors import OutboxClosedError, OutboxCorruptError, OutboxError, OutboxFullError, disk_is_full
from .ids import uuid7
from .payload import check_topic, encode_payload

__all__ = ["Outbox", "Durability", "find_open"]

log = logging.getLogger(__name__)

Durability = Literal["process", "power"]

_INSERT = "INSERT INTO events(id, topic, payload, created_at) VALUES (?, ?, ?, ?)"
_ROW_OVERHEAD = 96  # bytes a row costs beyond its payload, near enough for the max_bytes estimate
_MEASURE_EVERY = 256
_CHASE_AFTER_S = 0.05
_WAL_SIZE_LIMIT = 8 * 1024 * 1024  # the WAL file is cut back to this after it restarts
WAL_BOUND_BYTES = 64 * 1024 * 1024  # past this, a checkpoint makes the WAL start over (see _checkpoint)
_RESTART_WAIT_MS = 20  # the most a RESTART checkpoint waits for readers, holding appenders back
_FRAME_OVERHEAD = 24  # a WAL frame's header, beside its page
_BUSY_YIELDS = 3  # waiting for another writer's lock: first yield the CPU (see _retry_busy) ...
_BUSY_FIRST_SLEEP_S = 0.00002  # ... then sleep, doubling ...
_BUSY_MAX_SLEEP_S = 0.001  # ... up to this
_yield_cpu: Callable[[], object] = getattr(os, "sched_yield", lambda: time.sleep(0))
_T = TypeVar("_T")


class Outbox:
    """A durable local queue of events, one SQLite file that several processes may share.

    Parameters
    ----------
    path:
        The outbox file; created (mode 0600) if missing, beside a ``PATH-ship`` side file that
        the shipper creates.
    durability:
        ``"process"`` (default): an appended event survives the process being killed.
        ``"power"``: it also survives power loss; concurrent appends share one fsync.
    max_payload_bytes:
        The largest serialised payload accepted; bigger ones raise :class:`PayloadError`.
    max_bytes:
        Room the outbox may take on disk: the events file's pages in use and every other file
        (its WAL, the side file and its WAL); past it ``append`` raises
        :class:`OutboxFullError` until shipped events are pruned. ``None``: no limit.
    checkpoint_every:
        Appends between background WAL checkpoints, which keep the WAL file small.
    on_corrupt:
        ``"raise"`` (default) or ``"quarantine"``: move a damaged file aside as
        ``PATH.corrupt-<time>`` (keeping it for inspection) and start a fresh outbox, so a
        bot does not crash-loop on a file it cannot read.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "process",
        max_payload_bytes: int = 65536,
        max_bytes: int | None = None,
        checkpoint_every: int = 1000,
        on_corrupt: Literal["raise", "quarantine"] = "raise",
    ) -> None:
        if durability not in ("process", "power"):
            raise ValueError(f"durability must be 'process' or 'power', not {durability!r}")
        if max_payload_bytes <= 0:
            raise ValueError("max_payload_bytes must be positive")
        if max_bytes is not None and max_bytes <= 0:
            raise ValueError("max_bytes must be positive or None")
        self.path = Path(path)
        self.durability: Durability = durability
        self.max_payload_bytes = max_payload_bytes
        self.max_bytes = max_bytes
        # max_bytes covers the WAL too: bound it to a quarter, and checkpoint often enough for that
        self._wal_bound = WAL_BOUND_BYTES if max_bytes is None else max(64 * 1024, min(WAL_BOUND_BYTES, max_bytes // 4))
        self._checkpoint_every = max(1, checkpoint_every)
        if max_bytes is not None:
            self._checkpoint_every = min(self._checkpoint_every, max(16, self._wal_bound // (2 * 4096)))
        self._on_corrupt = on_corrupt
        self._conn: sqlite3.Connection | None = None
        self._cursor: sqlite3.Cursor | None = None  # reused: a cursor per INSERT costs ~0.4 us
        self._power = False  # set by open(), with the connection's synchronous level
        self._closed = False
        self._worker: concurrent.futures.ThreadPoolExecutor | None = None
        self._side: sqlite3.Connection | None = None  # checkpoints, from the worker thread
        # a thread's own future: its done() is true as soon as the checkpoint ends, even while an
        # appender flat out never yields to the event loop (an asyncio future would wait for it)
        self._checkpointing: concurrent.futures.Future[None] | None = None
        self._since_checkpoint = 0
        self._frame_bytes = 4096 + _FRAME_OVERHEAD  # set from the page size by the first checkpoint
        self._used_bytes = 0
        self._since_measure = 0
        self._queue: list[tuple[tuple[str, str, str, int], asyncio.Future[str]]] = []
        self._flusher: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[], None]] = []
        self.outbox_id = ""

    def add_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` on the event loop after every committed append.

        An in-process shipper uses this to wake at once instead of polling. Keep it cheap (set
        an ``asyncio.Event``): it runs on the command path.
        """
        self._listeners.append(callback)

    def remove_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``."""
        if callback in self._listeners:
            self._listeners.remove(callback)

    # -- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> Outbox:
        """Open (creating if needed) the outbox file."""
        if self._conn is not None:
            return self
        if self._closed:
            raise OutboxClosedError(f"outbox {self.path} is closed; make a new Outbox to reopen it")
        sync = "FULL" if self.durability == "power" else "NORMAL"
        if self._on_corrupt == "quarantine":
            # Several processes (bot shards) may meet the same damage at once: one at a time, each
            # looks again under the lock, so only the first moves the file aside and the others
            # open the fresh one it made.
            with _directory_lock(self.path.parent):
                try:
                    conn = self._connect(sync)
                except OutboxCorruptError as exc:
                    aside = _quarantine(self.path)
                    log.error("%s; moved it to %s and started a fresh outbox", exc, aside)
                    conn = self._connect(sync)
        else:
            conn = self._connect(sync)
        self._conn = conn
        self._cursor = conn.cursor()
        _open[self] = asyncio.get_running_loop()
        self._power = self.durability == "power"
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="outbox")
        return self

    def _connect(self, sync: str) -> sqlite3.Connection:
        """Open and check the events file; raise OutboxCorruptError if it is damaged."""
        conn = schema.connect_events(self.path, synchronous=sync)
        try:
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            conn.execute(f"PRAGMA journal_size_limit = {min(_WAL_SIZE_LIMIT, self._wal_bound)}")
            schema.outbox_id_of(conn, self.path)  # a file with no id is damaged
            self.outbox_id = identity.ensure_identity(conn, self.path)  # a copy forks here
            schema.check_shipped_within(conn, self.path, self.outbox_id, identity.previous_ids(conn))
            if self.max_bytes is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('max_bytes', ?)", (str(self.max_bytes),)
                )
                self._used_bytes = _used_bytes(conn, self.path)
            # From here on a busy lock is waited for by _retry_busy, not by SQLite's handler.
            conn.execute("PRAGMA busy_timeout = 0")
        except sqlite3.Error as exc:
            conn.close()
            raise _translate(exc, self.path) from None
        except BaseException:
            conn.close()
            raise
        return conn

    async def close(self) -> None:
        """Commit what is queued, wait for a running checkpoint, and close the file."""
        if self._closed:
            return
        self._closed = True
        _open.pop(self, None)
        if self._flusher is not None:
            await asyncio.shield(self._flusher)
        await self._checkpoint_finished()
        worker, side, conn = self._worker, self._side, self._conn
        self._worker = self._side = self._conn = None
        self._cursor = None
        if worker is not None:
            if side is not None:
                worker.submit(side.close).result()
            worker.shutdown(wait=True)
        if conn is not None:
            conn.close()

    async def __aenter__(self) -> Outbox:
        return await self.open()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._conn is not None and not self._closed:
            _warn(f"Outbox {self.path} was never closed", ResourceWarning, source=self)
            try:
                self._conn.close()
            except Exception:
                pass

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    # -- the hot path --------------------------------------------------------------------------

    async def append(self, topic: str, payload: Mapping[str, Any]) -> str:
        """Record one event durably and return its id (a UUIDv7 string).

        When this returns, the event is committed: it survives ``kill -9`` (and, with
        ``durability="power"``, power loss). Bad input raises :class:`PayloadError` and writes
        nothing.
        """
        cursor = self._cursor
        if cursor is None or self._closed:
            raise OutboxClosedError(
                f"outbox {self.path} is closed" if self._closed else f"outbox {self.path} is not open"
            )
        topic = check_topic(topic)
        text, size = encode_payload(payload, self.max_payload_bytes)
        if self.max_bytes is not None:
            self._reserve(cursor.connection, size)
        now = time.time_ns()  # one clock reading for the id's millisecond and created_at
        row = (uuid7(now), topic, text, now // 1000)
        if self._power:
            return await self._group_commit(row)
        try:
            cursor.execute(_INSERT, row)
        except sqlite3.Error as exc:
            try:
                _retry_busy(exc, cursor.execute, _INSERT, row)
            except sqlite3.Error as final:
                raise _translate(final, self.path) from None
        for callback in self._listeners:
            callback()
        self._since_checkpoint += 1
        if self._since_checkpoint >= self._checkpoint_every:
            if self._wal_past_bound():
                await self._catch_up()
            else:
                self._start_checkpoint()
        return row[0]

    def _reserve(self, conn: sqlite3.Connection, size: int) -> None:
        """Raise OutboxFullError if ``size`` more bytes would pass ``max_bytes``."""
        assert self.max_bytes is not None
        self._used_bytes += size + _ROW_OVERHEAD
        self._since_measure += 1
        if self._used_bytes > self.max_bytes or self._since_measure >= _MEASURE_EVERY:
            try:
                try:
                    used = _used_bytes(conn, self.path)
                except sqlite3.Error as exc:
                    used = _retry_busy(exc, _used_bytes, conn, self.path)
            except sqlite3.Error as exc:
                raise _translate(exc, self.path) from None
            self._used_bytes = used + size + _ROW_OVERHEAD
            self._since_measure = 0
            if self._used_bytes > self.max_bytes:
                self._used_bytes -= size + _ROW_OVERHEAD
                # Room the shipper made by pruning is in the WAL until a checkpoint, and the WAL
                # file counts: cut it back (refused appends write nothing that would).
                self._start_checkpoint(truncate=True)
                raise OutboxFullError(
                    f"outbox {self.path} is full: {self._used_bytes} bytes in use, limit {self.max_bytes}"
                    " (ship and prune events to make room)"
                )

    # -- durability="power": group commit ------------------------------------------------------

    async def _group_commit(self, row: tuple[str, str, str, int]) -> str:
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._queue.append((row, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        return await future

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        while self._queue:
            batch, self._queue = self._queue, []
            assert self._worker is not None
            try:
                await loop.run_in_executor(self._worker, self._commit_batch, [row for row, _ in batch])
            except BaseException as exc:
                error = _translate(exc, self.path) if isinstance(exc, sqlite3.Error) else exc
                for _, future in batch:
                    if not future.done():
                        future.set_exception(error)
                if not isinstance(exc, Exception):
                    raise
            else:
                for row, future in batch:
                    if not future.done():
                        future.set_result(row[0])
                for callback in self._listeners:
                    callback()
        self._since_checkpoint += 1
        if self._since_checkpoint >= max(1, self._checkpoint_every // 16):
            self._start_checkpoint()

    def _commit_batch(self, rows: list[tuple[str, str, str, int]]) -> None:
        conn = self._conn
        assert conn is not None
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            _retry_busy(exc, conn.execute, "BEGIN IMMEDIATE")
        try:
            conn.executemany(_INSERT, rows)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

    # -- checkpoints, off the command path ------------------------------------------------------

    def _start_checkpoint(self, *, truncate: bool = False) -> None:
        self._since_checkpoint = 0
        if self._worker is None or (self._checkpointing is not None and not self._checkpointing.done()):
            return
        loop = asyncio.get_running_loop()
        self._checkpointing = self._worker.submit(self._checkpoint, truncate)
        self._checkpointing.add_done_callback(_log_failure)
        self._checkpointing.add_done_callback(
            lambda _: loop.call_soon_threadsafe(loop.call_later, _CHASE_AFTER_S, self._chase)
        )

    def _wal_past_bound(self) -> bool:
        """True if the ``-wal`` file holds more than 1.5 times its bound (a stat, every
        ``checkpoint_every`` appends): appends are outrunning the checkpoints."""
        return _wal_frames(self.path, self._frame_bytes) * self._frame_bytes > self._wal_bound * 3 // 2

    async def _catch_up(self) -> None:
        """Wait for the running checkpoint, then for one that starts the WAL over (TRUNCATE),
        before the append that found the WAL past its bound returns (see the module's
        docstring)."""
        await self._checkpoint_finished()
        self._start_checkpoint(truncate=True)
        await self._checkpoint_finished()

    async def _checkpoint_finished(self) -> None:
        """Wait for the checkpoint on the side thread, if one is running. One that failed was
        logged by its callback; appending and closing go on."""
        running = self._checkpointing
        if running is not None:
            with contextlib.suppress(OutboxError):
                await asyncio.wrap_future(running)

    def _chase(self) -> None:
        """Checkpoint what was appended during the last checkpoint, so a pause leaves none behind."""
        if self._since_checkpoint and not self._closed:
            self._start_checkpoint()

    def _checkpoint(self, truncate: bool = False) -> None:
        try:
            side = self._side
            if side is None:
                side = self._side = schema.connect_events(self.path, create=False)
                side.execute(f"PRAGMA journal_size_limit = {min(_WAL_SIZE_LIMIT, self._wal_bound)}").close()
                side.execute(f"PRAGMA busy_timeout = {_RESTART_WAIT_MS}").close()
                self._frame_bytes = int(side.execute("PRAGMA page_size").fetchall()[0][0]) + _FRAME_OVERHEAD
            # PASSIVE never blocks an appender. The WAL restarts from its start at the first
            # append after a checkpoint has caught up, i.e. after any pause in the appends...
            _, frames, _ = side.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0]
            if frames < 0 and self.max_bytes is not None:
                # busy: another connection (a shipper's housekeeping) is checkpointing. Under a
                # max_bytes the WAL's bound is small (a quarter of it), so go by the file rather
                # than skip this chance: skipping let a 512 KiB bound reach 2 MiB, and the files
                # 1.3x max_bytes, in about a quarter of the disk-bound torture test's bounded runs
                # on a 2-core host (none in 26 since). Without max_bytes the bound is 64 MiB and
                # the next checkpoint's chance is taken, as before: not measured either way.
                frames = _wal_frames(self.path, self._frame_bytes)
            if truncate:  # full: the WAL file itself must shrink, now
                side.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            elif frames * self._frame_bytes > self._wal_bound:
                # ... or, under sustained appends, after a RESTART: it holds appenders back while
                # it copies what came since the PASSIVE and waits (briefly) for readers. Busy
                # (a reader stayed): the next checkpoint tries again.
                side.execute("PRAGMA wal_checkpoint(RESTART)").fetchall()
        except (sqlite3.Error, OutboxError) as exc:
            raise OutboxError(f"checkpoint of {self.path} failed: {exc}") from None


def _wal_frames(path: Path, frame_bytes: int) -> int:
    """How many frames the ``-wal`` file holds (0 if there is none)."""
    try:
        return os.path.getsize(f"{path}-wal") // frame_bytes
    except OSError:
        return 0


def _log_failure(future: concurrent.futures.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("%s", future.exception())


def _used_bytes(conn: sqlite3.Connection, path: Path) -> int:
    """What ``max_bytes`` limits: the events file's pages in use, and every other file (WALs, side file)."""
    # fetchall: a half-read cursor would hold a read snapshot and stop the WAL from restarting
    pages = conn.execute("PRAGMA page_count").fetchall()[0][0]
    free = conn.execute("PRAGMA freelist_count").fetchall()[0][0]
    size = conn.execute("PRAGMA page_size").fetchall()[0][0]
    return int((pages - free) * size) + schema.side_bytes(path)


def _retry_busy(first: sqlite3.Error, call: Callable[..., _T], *args: Any) -> _T:
    """Retry ``call`` while another writer holds the lock; re-raise anything else.

    SQLite's own busy handler sleeps at least 1 ms a try (then 2, 5, 10 ... 100 ms) while the
    holder may take the lock again at once: with several processes appending, a collision cost
    an append over a millisecond, and a waiter could starve for hundreds of milliseconds while
    the lock was free most of the time (a commit holds it for microseconds). So: yield the CPU
    a few times first, then sleep from 20 us, doubling up to 1 ms. Gives up, as SQLite's handler
    did, after ``BUSY_TIMEOUT_MS``, re-raising the last error.
    """
    exc = first
    deadline = time.monotonic() + schema.BUSY_TIMEOUT_MS / 1000
    tries = 0
    delay = _BUSY_FIRST_SLEEP_S
    while _is_busy(exc) and time.monotonic() < deadline:
        if tries < _BUSY_YIELDS:
            _yield_cpu()
        else:
            time.sleep(delay)
            delay = min(delay * 2, _BUSY_MAX_SLEEP_S)
        tries += 1
        try:
            return call(*args)
        except sqlite3.Error as again:
            exc = again
    raise exc


def _is_busy(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return isinstance(code, int) and code & 0xFF == _SQLITE_BUSY


@contextlib.contextmanager
def _directory_lock(directory: Path) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``directory`` (no lock file left behind)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# This process's open outboxes and the loop each was opened on, for find_open.
_open: weakref.WeakKeyDictionary[Outbox, asyncio.AbstractEventLoop] = weakref.WeakKeyDictionary()


def find_open(path: str | os.PathLike[str]) -> Outbox | None:
    """Return an open :class:`Outbox` of the file ``path`` on the running event loop, if any.

    A shipper started in the bot's process finds the bot's outbox this way and is woken by its
    appends (its listeners run on that loop), instead of polling the file.
    """
    where, loop = Path(path).resolve(), asyncio.get_running_loop()
    for ob, opened_on in list(_open.items()):
        if opened_on is loop and not ob.closed and ob.path.resolve() == where:
            return ob
    return None


_QUARANTINE_SUFFIXES = ("-wal", "-shm", "-ship", "-ship-wal", "-ship-shm", "")  # the file itself last


def _quarantine(path: Path) -> Path:
    """Move a damaged outbox and its side files to a name no earlier quarantine has used.

    The main file moves last: until then an opener still finds the damaged file (and fails),
    never a fresh one beside the old WAL, which SQLite would replay into it.
    """
    stamp = time.strftime("%Y%m%dT%H%M%S")
    for n in itertools.count(1):
        aside = path.with_name(f"{path.name}.corrupt-{stamp}" + (f"-{n}" if n > 1 else ""))
        if not any(Path(f"{aside}{suffix}").exists() for suffix in _QUARANTINE_SUFFIXES):
            break
    try:
        for suffix in _QUARANTINE_SUFFIXES:
            src = Path(f"{path}{suffix}")
            if src.exists():
                src.rename(Path(f"{aside}{suffix}"))
    except OSError as exc:
        raise OutboxError(f"cannot move damaged outbox {path} aside: {exc.strerror}") from None
    return aside


_SQLITE_FULL, _SQLITE_BUSY, _SQLITE_LOCKED = 13, 5, 6
_SQLITE_CORRUPT, _SQLITE_NOTADB, _SQLITE_READONLY = 11, 26, 8


def _translate(exc: BaseException, path: Path) -> OutboxError:
    """Map a sqlite3 error onto the outbox's error tree, naming the file."""
    code = getattr(exc, "sqlite_errorcode", None)
    primary = code & 0xFF if isinstance(code, int) else None
    if disk_is_full(exc, path):  # SQLITE_FULL, and the I/O errors a full disk causes (-shm growth)
        return OutboxFullError(f"the disk holding outbox {path} is full")
    if primary in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return OutboxError(f"outbox {path} stayed locked by another writer for {schema.BUSY_TIMEOUT_MS} ms")
    if primary in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
        return OutboxCorruptError(f"outbox {path} is damaged: {exc}")
    if primary == _SQLITE_READONLY:
        return OutboxError(f"outbox {path} is read-only: {exc}")
    return OutboxError(f"outbox {path}: {exc}")
