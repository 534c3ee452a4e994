"""The shipping loop: read a batch, send it, record progress; survive everything in between.

One loop per outbox file, in the bot's process (woken by its appends) or in a sidecar (polling
every ``flush_interval``). It ships at once when idle; batches grow while a backlog waits
(:mod:`shipper.batching`) and, in the bot's process, while appends keep coming (:mod:`shipper.wakeup`
gathers them for a few ms). Only the holder of the outbox's lease (a Postgres row that expires,
:mod:`shipper.lease`) ships; a second shipper started by mistake stands by, says so, and takes
over within about one TTL if the first one dies or freezes. Even without the lease the ledger
refuses a batch shipped twice, so a mistake costs time, never a duplicate. The loop calls into the rest:
the next batch read while one is in flight (:mod:`shipper.readahead`), progress noted in the side
file off the critical path (:mod:`shipper.progress`), the side work between batches (:mod:`shipper.housekeeping`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from outbox import Outbox, OutboxClosedError, OutboxCorruptError, OutboxError, OutboxReader
from outbox.append import find_open

from . import filewatch, forks
from .backlog import BacklogGauges, nothing_pending
from .backoff import describe
from .batching import MAX_BATCH_BYTES, BatchSizer
from .errors import DsnError, GrantError, ShipperError, classify
from .housekeeping import Housekeeping
from .lease import LeaseKeeper
from .routes import RouteError
from .metrics import Metrics
from .pgsink import PostgresSink
from .progress import Progress
from .readahead import ReadAhead
from .room import open_when_room
from .sink import Batch, Sink
from .stats import ShipperStats
from .wakeup import LINGER_S, WATCHED_S, Wakeup

__all__ = ["Shipper", "ShipperStats"]

log = logging.getLogger(__name__)


class Shipper:
    """Forward an outbox's events to Postgres in batches, exactly once in effect.

    Parameters
    ----------
    outbox_path:
        The outbox file (created if missing, so a sidecar may start before the bot).
    dsn:
        The Postgres to ship to. Or pass ``sink=`` (e.g. :class:`InMemorySink` in tests).
    batch_size:
        Most events per batch (one transaction each).
    flush_interval:
        Seconds between looks for new events when nothing wakes the loop. In the bot's process,
        once the file has been still for a few looks, a write to it by any process wakes the
        loop instead, and it looks at least once a second (see :mod:`shipper.filewatch`).
    retention_s:
        How long shipped events stay in the outbox for replay before pruning.
    outbox:
        An open :class:`Outbox` in this process: its appends wake the loop (see
        :mod:`shipper.wakeup`). By default, one open on the same file in this process is found.
    metrics_port:
        Serve Prometheus metrics on ``metrics_addr:port``.
    metrics_addr:
        The address the metrics listen on (``0.0.0.0`` for a Prometheus in another container).
    stop_timeout:
        Seconds :meth:`stop` (and ``async with``'s exit) spends shipping what is pending.
    schema:
        The Postgres schema of the shipper's tables (every statement names it).
    lease_ttl:
        Seconds the lease lasts unrenewed: a standby takes over about this long after the
        leader dies or freezes; a batch transaction may run at most this long.
    max_batch_bytes:
        While a backlog waits batches grow past ``batch_size`` until a transaction's fixed
        cost (round trip, commit: measured on the lease's) is about 5% of a batch, up to about
        this many bytes (0: never; ``batch_size`` is then the most events per batch). So a
        Postgres far away gets big batches and a near one small, quick ones (:mod:`shipper.batching`).
    routes:
        ``{topic: table}``: topics that land in the user's own tables (:mod:`shipper.routes`).
    pg_retention_s:
        Drop whole Postgres partitions older than this (:mod:`shipper.partitions`); off by default.
    """

    def __init__(
        self,
        outbox_path: str | os.PathLike[str],
        dsn: str | None = None,
        *,
        batch_size: int = 1000,
        flush_interval: float = 0.05,
        retention_s: float = 7 * 86400,
        outbox: Outbox | None = None,
        metrics_port: int | None = None,
        metrics_addr: str = "127.0.0.1",
        sink: Sink | None = None,
        stop_timeout: float = 10.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 30.0,
        housekeeping_interval: float = 60.0,
        schema: str = "public",
        lease_ttl: float = 30.0,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        routes: Mapping[str, str] | None = None,
        pg_retention_s: float | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if flush_interval <= 0:
            raise ValueError("flush_interval must be positive")
        if sink is None:
            if not dsn:
                raise ValueError("give a dsn (or a sink) to ship to")
            sink = PostgresSink(dsn, schema=schema, batch_timeout=lease_ttl, routes=routes, pg_retention_s=pg_retention_s)
        elif routes or pg_retention_s is not None:
            raise ValueError("give routes and pg_retention_s to the sink itself")
        self.path = Path(outbox_path)
        self.sink = sink
        self.where = getattr(sink, "where", type(sink).__name__)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.retention_s = retention_s
        self.stop_timeout = stop_timeout
        self._backoff = (backoff_base, backoff_cap)
        self._outbox = outbox
        self._metrics = Metrics(metrics_port, metrics_addr) if metrics_port is not None else None
        self._gauges = BacklogGauges(self.path, self._metrics) if self._metrics is not None else None
        self.reader = OutboxReader(self.path, create=True)
        self._housekeeping = Housekeeping(self.reader, sink, interval=housekeeping_interval)
        self.stats = ShipperStats()
        self._task: asyncio.Task[None] | None = None
        # a sleep on the file's watch ends in time to renew the lease (see shipper.wakeup)
        self._wakeup = Wakeup(
            linger=min(LINGER_S, flush_interval), full=batch_size, watched=min(WATCHED_S, lease_ttl / 3)
        )
        self._progress = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stopping = False
        self._halt = False
        self._connected = False
        self._leader = False
        self._said_standby = False
        self._notes = Progress(self.reader)
        self._lease = LeaseKeeper(sink, lease_ttl)
        self._sizer = BatchSizer(batch_size, max_batch_bytes, lambda: self._lease.trip_s)
        self._last_kind: str | None = None
        self._fatal: BaseException | None = None
        self._ahead = ReadAhead(self.reader, sink, self._lease)
        self._spent: Batch | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the outbox and start shipping in the background."""
        if self._task is not None:
            return
        if not await open_when_room(self.reader, self._stop_requested):  # a full disk: wait, not exit
            return
        if self._outbox is None:
            self._outbox = find_open(self.path)
        if self._outbox is not None:
            self._outbox.add_listener(self._wakeup.notify)
            # other processes' writes: told by the file, not looked for 20 times a second (filewatch.py)
            self._wakeup.watch = filewatch.watch(Path(f"{self.reader.path}-wal"))
        if self._metrics is not None:
            self._metrics.start()
        if self._gauges is not None:
            self._gauges.start()
        self._task = asyncio.create_task(self._run(), name=f"shipper {self.path}")
        log.info("shipping %s to %s (batch_size=%d)", self.path, self.where, self.batch_size)

    def request_stop(self) -> None:
        """Ask the loop to ship what is pending and finish (safe from a signal handler)."""
        self._stopping = True
        self._stop_requested.set()
        self._wakeup.kick()

    def halt(self) -> None:
        """Stop after the batch in flight, leaving the rest pending (a drain that ran out of time)."""
        self._halt = True
        self.request_stop()

    async def stop(self, timeout: float | None = None) -> None:
        """Ship what is pending for up to ``timeout`` seconds, then stop; nothing is lost either way."""
        task = self._task
        if task is None:
            await self._release()
            return
        self.request_stop()
        deadline = self.stop_timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(deadline):  # not wait_for, which on 3.11 can lose the caller's cancel
                await asyncio.shield(task)
        except asyncio.TimeoutError:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            pending = (await self.reader.status()).pending
            log.warning("stopped after %.1f s with %d events still pending; they stay in the outbox", deadline, pending)
        except ShipperError:
            pass  # already logged by the loop; stopping must still succeed
        except asyncio.CancelledError:
            task.cancel()  # the caller gave up waiting: the loop must end all the same
            await asyncio.gather(task, return_exceptions=True)
            raise
        finally:
            self._task = None
            await self._release()

    async def _release(self) -> None:
        self._ahead.drop()
        await self._notes.settle()
        if self._outbox is not None:
            self._outbox.remove_listener(self._wakeup.notify)
        watch, self._wakeup.watch = self._wakeup.watch, None
        if watch is not None:
            watch.close()
        if self._lease.held:
            await self._lease.release(self.reader.outbox_id)
        await self.sink.close()
        await self.reader.close()
        if self._gauges is not None:
            await self._gauges.stop()
        if self._metrics is not None:
            self._metrics.stop()

    async def serve(self) -> None:
        """Ship until :meth:`request_stop`, then drain (up to ``stop_timeout``) and return."""
        await self.start()
        if self._task is None:  # stopped while waiting for room on a full disk
            return
        stop_waiter = asyncio.ensure_future(self._stop_requested.wait())
        try:
            await asyncio.wait({self._task, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop_waiter.cancel()
        fatal = self._fatal
        await self.stop()
        if fatal is not None:
            raise fatal

    async def __aenter__(self) -> Shipper:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._task is not None and not self._task.done():
            _warn(f"Shipper for {self.path} was never stopped", ResourceWarning, source=self)

    async def drain(self, timeout: float | None = None) -> int:
        """Return once every event pending at the call is shipped (or set aside); how many shipped."""
        if self._task is None:
            raise ShipperError("the shipper is not running: use `async with Shipper(...)` or start() first")
        target = await self.reader.last_seq()
        before = self.stats.shipped
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._fatal is not None:
                raise self._fatal
            if self._last_kind == "permission":  # an owner must act: a one-off drain says so and ends
                raise GrantError(self.stats.last_error)
            # this loop's own cursor is committed in Postgres; the side file's may lag (see shipper.progress)
            cursor = max(self._cursor, await self.reader.cursor())
            ahead = await self.reader.read_pending(1, after=cursor)
            if not ahead or ahead[0].seq > target:
                await self._notes.settle()  # so `outbox status` agrees once this returns
                return self.stats.shipped - before
            if self._task.done():  # its fatal error, if it ended on one while this read the file
                raise self._fatal or ShipperError("the shipper stopped before the drain finished")
            wait = self.flush_interval if deadline is None else min(self.flush_interval, deadline - loop.time())
            if wait <= 0:
                raise ShipperError(f"drain timed out after {timeout:g} s; events are still pending")
            self._wakeup.kick()  # look now, and again after each batch: a drain never lingers
            self._progress.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._progress.wait()
            except asyncio.TimeoutError:
                pass

    @property
    def max_batch_bytes(self) -> int:
        """The most bytes a batch grows to (0: none grow); the batch sizer holds it."""
        return self._sizer.max_bytes

    @property
    def _cursor(self) -> int:
        """The last seq shipped (see :class:`shipper.progress.Progress`)."""
        return self._notes.cursor

    @_cursor.setter
    def _cursor(self, seq: int) -> None:
        self._notes.cursor = seq

    # -- the loop --------------------------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                if not self._connected:
                    await self._connect()
                if not self._leader and not await self._claim():
                    if self._stopping:
                        return
                    await self._idle(max(self._lease.poll_interval, self.flush_interval))
                    continue
                if not await self._lease.keep(self.reader.outbox_id):
                    self._stand_by()
                    continue
                shipped = await self._ship_once()
                await self._maintain()
                if failures:
                    log.info("shipping to %s resumed", self.where)
                    await self.reader.set_error(None)
                    failures = 0
                    self._last_kind = None
                # After a batch that took all there was, an in-process loop waits for the next
                # appends (gathering them while they keep coming, see wakeup.py); a sidecar, a
                # backlog and a stop look again at once.
                if shipped and not self._halt and (self._ahead.pending or self._outbox is None or self._stopping):
                    continue
                self._notes.note()  # catches up within NOTE_EVERY_S of going idle
                if self._stopping:
                    return
                await self._idle(self.flush_interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if classify(exc) == "lease":  # refused by the fence: another shipper took over
                    self._lease.lost(self.reader.outbox_id)
                    self._stand_by()
                    continue
                # damage no retry can mend (a file that lost its end, a DSN that cannot work, a
                # route to a table that is not there at start): stop with one clear error
                if isinstance(exc, (OutboxCorruptError, OutboxClosedError, DsnError)) or (
                    isinstance(exc, RouteError) and not self.stats.batches
                ):
                    self._fatal = exc
                    log.error("%s", exc)
                    return
                failures += 1
                delay = await self._failed(exc, failures)
                if self._stopping and (self._halt or await nothing_pending(self.reader, self._cursor)):
                    return  # nothing to wait for: stopping must not take the whole stop_timeout
                await self._idle(delay, wake=False)

    async def _connect(self) -> None:
        await self.sink.open()
        self._connected = True
        self._leader = False

    def _stand_by(self) -> None:
        self._leader = False
        self._ahead.drop()
        self._said_standby = True  # the lease's own line said it: the next one is "took over"

    async def _claim(self) -> bool:
        if not await self._lease.claim(self.reader.outbox_id):
            # a VM clone of this file may hold it: forked, it has the lease of its own id
            if await self._fork_if_not_ours(await self.reader.cursor(), await self.sink.position(self.reader.outbox_id)):
                return False
            if not self._said_standby:
                log.warning(
                    "another shipper holds the lease on outbox %s (%s): standing by, will take over if it stops",
                    self.reader.outbox_id,
                    self.path,
                )
                self._said_standby = True
            return False
        self._leader = True
        if self._said_standby:
            log.info("took over the lease on outbox %s", self.reader.outbox_id)
            self._said_standby = False
        remote = await self.sink.position(self.reader.outbox_id)
        local = await self.reader.cursor()
        if await self._fork_if_not_ours(local, remote):  # advancing would skip this file's own events
            return False
        self._cursor = max(local, remote)
        if remote > local:
            await self.reader.advance(remote)
        self._notes.noted = max(self._notes.noted, self._cursor)
        return True

    async def _ship_once(self) -> int:
        spent, self._spent = self._spent, None  # sent last time, a read-ahead after it (see ReadAhead.start)
        batch = await self._ahead.take(self._cursor)
        if batch is None:
            batch = await self._ahead.read_batch(self._cursor, self._sizer.limit, ahead=self._outbox is not None)
        if batch is None:
            return 0
        events = batch.events
        # Read the next batch while this one is in flight (see shipper.readahead). A short batch
        # means nothing more was there: no read-ahead.
        if self._sizer.read(batch):
            self._ahead.start(batch.last_seq, self._sizer.limit, spent)
        del spent
        started = time.monotonic()
        try:
            result = await self.sink.send(batch, self.reader.set_aside)
        except BaseException:
            self._ahead.drop()
            raise
        if result.already_shipped_to is not None:
            why = await forks.batch_is_not_ours(self.sink, events, [e for e, _ in batch.routed.refused])
            if why is not None:
                await self._fork(why)
                return 1
            log.warning(
                "events of outbox %s after seq %d were already shipped (to seq %d) by another shipper;"
                " skipping ahead -- is a second shipper running on %s?",
                self.reader.outbox_id,
                batch.after_seq,
                result.already_shipped_to,
                self.path,
            )
            self._cursor = max(self._cursor, result.already_shipped_to)
            self._ahead.drop()
            await self._notes.write(self._cursor)
            return 1
        self._cursor = batch.last_seq
        self._spent = batch if self._ahead.pending else None  # the next read-ahead frees it
        self._notes.note()
        seconds = time.monotonic() - started
        self._sizer.sent(len(events), seconds)
        self._count(result.shipped, result.rejected, seconds)
        return len(events)

    async def _fork_if_not_ours(self, local: int, remote: int) -> bool:
        """Fork if the ledger's range past ``local`` is another file's (see :mod:`shipper.forks`)."""
        why = None if remote <= local else await forks.ledger_is_not_ours(self.reader, self.sink, local, remote)
        if why is not None:
            await self._fork(why)
        return why is not None

    async def _fork(self, why: str) -> None:
        """Take a new outbox id and start over under it, from the side file's cursor."""
        if self._lease.held:  # let go of the old id's lease: the other copy ships under it
            await self._lease.release(self.reader.outbox_id)
        await self.reader.fork(why)
        self._ahead.drop()
        self._cursor = await self.reader.cursor()
        self._connected = self._leader = False
        await self.sink.close()

    def _count(self, shipped: int, rejected: list[Any], seconds: float) -> None:
        self.stats.shipped += shipped
        self.stats.dead += len(rejected)
        self.stats.batches += 1
        for event, error in rejected:
            log.error("event %s (topic %s) refused by Postgres, kept as a dead letter: %s", event.id, event.topic, error)
        if self._metrics is not None:
            self._metrics.batch(shipped, len(rejected), seconds)
        self._progress.set()

    async def _failed(self, exc: Exception, failures: int) -> float:
        failure = describe(exc)  # see shipper.backoff
        if failure.timed_out:
            self._sizer.timed_out()  # statement timeout: try smaller batches
        self.stats.retries += 1
        if self._metrics is not None:
            self._metrics.retry()
        delay = failure.delay(failures, *self._backoff)
        self._last_kind, self.stats.last_error = failure.kind, failure.text
        log.warning("shipping to %s failed (%s, attempt %d): %s; retrying in %.2f s", self.where, failure.kind, failures, failure.text, delay)
        self._connected = self._leader = False
        await self.sink.close()
        try:
            await self.reader.set_error(failure.text)
        except OutboxError:
            pass
        return delay

    async def _idle(self, seconds: float, *, wake: bool = True) -> None:
        """Sleep ``seconds``, or less if woken: by appends when idle (see :mod:`shipper.wakeup`), by
        a stop request in a backoff.

        Once stopping, a backoff is slept in full: the stop deadline, not a spin, bounds it.
        """
        if not wake and self._stopping:
            await asyncio.sleep(seconds)
            return
        if wake:
            await self._wakeup.wait(seconds)
            return
        try:
            async with asyncio.timeout(seconds):
                await self._stop_requested.wait()
        except asyncio.TimeoutError:
            pass

    # -- side work -------------------------------------------------------------------------------

    async def _maintain(self) -> None:
        now = time.monotonic()
        every = max(1.0, self.flush_interval)
        retried = await self._housekeeping.retry_dead_letters(now, every=every, batch_size=self.batch_size)
        if retried is not None:
            self._count(retried.shipped, retried.rejected, 0.0)
        await self._housekeeping.tidy(now, retention_s=self.retention_s)
