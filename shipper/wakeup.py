"""When the shipping loop looks for new events: at once after a quiet spell, a few ms later while
appends keep coming.

Woken by every append of an outbox in its own process, the loop used to read and send each event
in a transaction of its own: at 1,000 appends/s, a thousand batches a second and about +270 us
of the bot's CPU per command, for a lag nobody needs below a few milliseconds. Appends that keep
coming are gathered instead, as Kafka's ``linger.ms`` or Nagle's algorithm gather writes: when
the recent append rate says more than one event will arrive within the linger, a look waits
until the first append it will ship is ``linger`` old, or a batch's worth has come. A batch then
holds many events and no event waits more than ``linger`` longer for it. A first append after a
quiet spell is looked for at once, and a drain or a stop never lingers.

The rate is learnt from the looks themselves (appends counted between two looks over the time
between them), so the append path pays one increment and, for the first append after a look,
one clock reading and an ``Event.set``.

Writes by other processes are not appends of this one. Given a :class:`shipper.filewatch.FileWatch`
on the file, a loop that has seen the file still for ``QUIET_LOOKS`` looks sleeps until the
file changes (at most ``watched`` seconds) instead of looking every ``flush_interval``: an idle
bot then wakes about once a second, not twenty times (see :mod:`shipper.filewatch`).
"""

from __future__ import annotations

import asyncio
import time

from .filewatch import FileWatch

__all__ = ["LINGER_S", "QUIET_LOOKS", "WATCHED_S", "Wakeup"]

LINGER_S = 0.03
"""The most an append waits for company: the lag target (p99 <= 50 ms at 1,000/s) less what a
look, a read and a send take at worst, and at 1,000 appends/s about thirty events a batch. A
batch costs the bot about 1.2 ms of CPU whatever its size (the read, the one query, the
bookkeeping; measured with ``python -m bench inprocess`` at 1,000 and 5,000/s: +60 us a command
at ~22 events a batch, +14 us at ~108), so the linger is what the cost per command is divided
by: 10 ms gave +60 us a command on a fast host, 20 ms +43 us there and +55-77 us on a slower
one, for a lag p99 of the linger plus ~3 ms."""

QUIET_LOOKS = 3
"""Looks that must find the file unchanged before the loop sleeps on the watch: a commit is
visible a moment after its frames are written, so the looks after a change go on polling."""

WATCHED_S = 1.0
"""The longest a loop sleeps on a watch of the file: a look now and then all the same, in case
a change went unreported (an inotify queue that overflowed, a file system that does not tell)."""

_COMPANY = 1.0  # linger only if another append is expected within the linger
_SMOOTHING = 0.5  # weight of the newest look in the rate estimate


class Wakeup:
    """The loop's alarm clock: appends (:meth:`notify`) and requests (:meth:`kick`) wake it.

    Parameters
    ----------
    linger:
        Seconds an append may wait for others to join its batch while appends keep coming.
    full:
        Appends after which a look stops lingering (a whole batch is there).
    watch:
        A watch of the file for other processes' writes (None: poll).
    watched:
        The longest sleep on the watch, seconds.
    """

    def __init__(
        self, *, linger: float = LINGER_S, full: int = 1000, watch: FileWatch | None = None, watched: float = WATCHED_S
    ) -> None:
        self.linger = linger
        self.full = max(1, full)
        self.watch = watch
        self.watched = watched
        self.looks = 0
        """Looks so far (each :meth:`wait` that returned)."""
        self._still = 0  # looks in a row that found the file unchanged
        self._changed = False  # the watch fired while the loop slept on it
        self.rate = 0.0
        """Appends per second, as estimated at the last look."""
        self._woken = False  # an append, or a kick, since the last look
        self._enough = False  # a batch's worth, or a kick: stop lingering
        self._waiter: asyncio.Future[None] | None = None  # the loop's, while it sleeps in wait()
        self._urgent = False
        self._appends = 0  # since the last look
        self._first = 0.0  # time.monotonic() of the first of them
        self._last_look = time.monotonic()

    def notify(self) -> None:
        """Note one committed append (an outbox listener: it runs on the command path)."""
        self._appends += 1
        if self._appends == 1:
            self._first = time.monotonic()
            self._woken = True
            self._wake()  # the loop is not lingering: it lingers only once an append has come
        elif self._appends == self.full:
            self._enough = True
            self._wake()

    def kick(self) -> None:
        """Look now and do not linger (a drain or a stop is waiting)."""
        self._urgent = self._woken = self._enough = True
        self._wake()

    @property
    def watching(self) -> bool:
        """True if the next sleep without appends waits on the watch rather than ``seconds``."""
        return self.watch is not None and self._still >= QUIET_LOOKS

    @property
    def lingering(self) -> bool:
        """True if appends come fast enough that the next look waits for company."""
        return self.rate * self.linger >= _COMPANY

    async def wait(self, seconds: float) -> None:
        """Return after ``seconds``, or sooner: at once for a kick, for an append at once after a
        quiet spell, or once the first append is ``linger`` old while appends keep coming.

        With a watch and the file still, ``seconds`` stretch to ``watched`` and a write to the
        file by anyone ends the sleep. One task waits at a time (the shipping loop)."""
        if not self._woken:
            if self.watching:
                await self._sleep_watched(max(seconds, self.watched))
            else:
                await self._sleep(seconds)
        if self._appends and not self._urgent and self.lingering:
            remaining = self._first + self.linger - time.monotonic()
            if remaining > 0 and not self._enough:
                await self._sleep(remaining)
        self._looked()

    async def _sleep(self, seconds: float) -> None:
        """Sleep until :meth:`_wake` or ``seconds`` pass: a future and a timer, where
        ``asyncio.wait_for`` of an ``Event`` made a task as well (measured: 7 against 15 us of
        CPU per wake, 49 against 70 us per timeout, twice a batch in a bot's process)."""
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(seconds, _settle, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None

    async def _sleep_watched(self, seconds: float) -> None:
        """:meth:`_sleep`, woken also by a write to the watched file."""
        assert self.watch is not None
        loop = asyncio.get_running_loop()
        fd = self.watch.fileno()
        loop.add_reader(fd, self._file_changed)
        try:
            await self._sleep(seconds)
        finally:
            loop.remove_reader(fd)

    def _file_changed(self) -> None:
        if self.watch is not None and self.watch.changed():
            self._changed = self._woken = True
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None:
            _settle(self._waiter)

    def _looked(self) -> None:
        now = time.monotonic()
        elapsed = now - self._last_look
        if elapsed > 0:
            newest = self._appends / elapsed
            self.rate = newest if self.rate == 0.0 else _SMOOTHING * newest + (1 - _SMOOTHING) * self.rate
        self._last_look = now
        self._appends = 0
        self.looks += 1
        watch = self.watch
        if watch is not None:  # what changed before this look, this look reads
            changed, self._changed = watch.changed() or self._changed, False
            self._still = 0 if changed else self._still + 1
            if watch.lost:
                watch.close()
                self.watch = None
        self._urgent = self._woken = self._enough = False


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
