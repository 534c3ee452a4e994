"""The loop's cursor, and the side file's copy of it noted off the critical path.

Postgres's ledger already says where a restarted shipper resumes (it takes the larger of the
two), so the side file's cursor is a copy for local readers (``outbox status``, pruning) and
only has to catch up: a note per batch cost ~10% of a drain (a commit on aiosqlite's thread
beside every COPY), and in the bot's process a note per event cost every command a thread hop.
So the loop notes at most every ``NOTE_EVERY_S``, never waiting for the note; draining and
stopping wait for the side file to catch up.
"""

from __future__ import annotations

import asyncio
import logging
import time

from outbox import OutboxError, OutboxReader

__all__ = ["NOTE_EVERY_S", "Progress"]

log = logging.getLogger(__name__)

NOTE_EVERY_S = 0.5
"""While busy, progress reaches the side file at most this often. Each note is a commit on
aiosqlite's thread and a wake of the loop when it returns: in a bot shipping 1,000 commands/s,
~8 notes a second at 0.1 s cost each command ~5 us of CPU (``bench.procs.interleaved``, old
against new, 4 runs each: +52.4 -> +45.0 us with the idle looks of shipper.filewatch). Only
``outbox status`` and pruning read the note, and a drain or a stop brings it up to date."""


class Progress:
    """Where the loop is (:attr:`cursor`) and what the side file is known to hold (:attr:`noted`)."""

    def __init__(self, reader: OutboxReader) -> None:
        self.reader = reader
        self.cursor = 0
        """The last seq shipped: committed in Postgres with its batch."""
        self.noted = 0
        """The cursor the side file is known to hold."""
        self._noting: asyncio.Future[None] | None = None
        self._next_note = 0.0

    def note(self) -> None:
        """Note progress in the side file, never waiting for it, at most every ``NOTE_EVERY_S``.

        The loop calls this after every batch and every idle look, so the side file is at most
        ``NOTE_EVERY_S`` plus one ``flush_interval`` behind. One note is in flight at a time; a
        failed one is raised here, at the next call.
        """
        noting = self._noting
        if noting is not None:
            if not noting.done():
                return
            self._noting = None
            noting.result()  # a failed note's error, now
        if self.noted < self.cursor and time.monotonic() >= self._next_note:
            self._start_note()

    def _start_note(self) -> None:
        self._next_note = time.monotonic() + NOTE_EVERY_S
        self._noting = asyncio.ensure_future(self.write(self.cursor))

    async def write(self, cursor: int) -> None:
        """Note ``cursor`` in the side file now."""
        await self.reader.advance(cursor)
        self.noted = max(self.noted, cursor)

    async def flush(self) -> None:
        """Bring the side file's cursor up to this loop's, waiting for the note."""
        while True:
            noting, self._noting = self._noting, None
            if noting is not None:
                await noting
            if self.noted >= self.cursor:
                return
            self._start_note()

    async def settle(self) -> None:
        """Bring the side file up to date, as a drain ends or before closing the reader; a
        failure is only logged (Postgres's ledger holds the progress)."""
        try:
            await self.flush()
        except OutboxError as exc:
            log.warning("could not note progress in %s: %s", self.reader.path, exc)
