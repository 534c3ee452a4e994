"""When did each event become visible in Postgres? A listener on the ledger's commits.

The benchmark database gets a trigger on ``outbox_ledger`` (:func:`bench.backlog.prepare_database`
with ``notify=True``) that sends ``NOTIFY bench_ledger, '<outbox_id> <last_seq>'``. Postgres
delivers a notification when the sending transaction commits -- the moment the batch's rows
become visible to every other session -- so a listener in another process, stamping each one on
arrival with the wall clock, learns when every seq up to ``last_seq`` became visible, with no
polling. Stamps are late by the delivery itself (a local socket hop, tens of microseconds), so
lags computed from them are upper bounds.

The listener survives a Postgres outage: it reconnects every 50 ms, and after reconnecting asks
the ledger how far the outbox has got, stamped at the moment of the answer (again late, never
early), so a commit made before it was listening again is not missed.
"""

from __future__ import annotations

import asyncio
import bisect
import time
from collections.abc import Sequence
from typing import Any

import asyncpg

from .backlog import LEDGER_CHANNEL

__all__ = ["LedgerWatcher", "lags_us"]


class LedgerWatcher:
    """Collect ``(wall clock ns, last_seq)`` for every batch of one outbox committed in Postgres."""

    def __init__(self, dsn: str, outbox_id: str) -> None:
        self.dsn = dsn
        self.outbox_id = outbox_id
        self.seen: list[tuple[int, int]] = []
        self.reconnects = 0
        self.reconnected: list[int] = []  # wall-clock ns of each reconnection: Postgres answering again
        self._conn: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._probes: dict[int, asyncio.Future[int]] = {}

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.ensure_future(self._supervise())

    def _on_notify(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        now = time.time_ns()
        outbox_id, _, last = payload.partition(" ")
        if outbox_id == self.outbox_id:
            self.seen.append((now, int(last)))
        elif outbox_id == "probe":
            probe = self._probes.pop(int(last), None)
            if probe is not None and not probe.done():
                probe.set_result(now)

    async def calibrate(self, n: int = 50) -> list[float]:
        """Time ``n`` NOTIFYs sent from another connection until they arrive here, in microseconds.

        Each is the time from asking Postgres to send one (an autocommit ``SELECT pg_notify``,
        which writes no WAL) to its arrival: how late the stamps can be, on this machine now.
        """
        out = []
        sender = await asyncpg.connect(self.dsn, timeout=5)
        try:
            loop = asyncio.get_running_loop()
            for i in range(n):
                arrived: asyncio.Future[int] = loop.create_future()
                self._probes[i] = arrived
                t0 = time.time_ns()
                await sender.execute(f"SELECT pg_notify('{LEDGER_CHANNEL}', 'probe {i}')")
                out.append((await asyncio.wait_for(arrived, 5) - t0) / 1000)
                await asyncio.sleep(0.005)
        finally:
            await sender.close()
        return out

    async def _connect(self) -> None:
        conn = await asyncpg.connect(self.dsn, timeout=2)
        try:
            await conn.add_listener(LEDGER_CHANNEL, self._on_notify)
            last = await conn.fetchval(
                "SELECT max(last_seq) FROM outbox_ledger WHERE outbox_id = $1::uuid", self.outbox_id
            )
        except BaseException:
            conn.terminate()
            raise
        if last is not None:
            self.seen.append((time.time_ns(), int(last)))
        self._conn = conn

    async def _supervise(self) -> None:
        while not self._stopping:
            await asyncio.sleep(0.05)
            conn = self._conn
            alive = conn is not None and not conn.is_closed()
            if alive:
                try:
                    await conn.fetchval("SELECT 1", timeout=1)
                except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    alive = False
            if alive:
                continue
            if conn is not None:
                conn.terminate()
                self._conn = None
            try:
                await self._connect()
                self.reconnects += 1
                self.reconnected.append(time.time_ns())
            except (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                pass  # still down: try again in 50 ms

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        if self._conn is not None:
            try:
                await self._conn.close(timeout=2)
            except Exception:
                self._conn.terminate()
            self._conn = None

    def visible_at(self, seqs: Sequence[int]) -> list[int | None]:
        """For each seq (ascending), the wall-clock ns when it was first seen committed (None: never)."""
        seen = sorted(self.seen)
        # a running maximum of last_seq over time: seq s is visible from the first stamp where it is >= s
        times, highs, high = [], [], 0
        for t, last in seen:
            if last > high:
                high = last
                times.append(t)
                highs.append(high)
        out: list[int | None] = []
        for s in seqs:
            i = bisect.bisect_left(highs, s)
            out.append(times[i] if i < len(highs) else None)
        return out


def lags_us(created_us: Sequence[int], visible_ns: Sequence[int | None]) -> list[float]:
    """Append-to-visible lag of each event, in microseconds (events never seen are left out)."""
    return [v / 1000 - c for c, v in zip(created_us, visible_ns) if v is not None]
