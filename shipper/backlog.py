"""The backlog as the outbox itself counts it: for the metrics gauges, and for stopping.

The shipping loop reaches its maintenance step only after a batch went through, so gauges set
there froze during an outage (``outbox_pending`` read 0.0 while ``outbox status`` showed the
backlog growing): the alert that matters most never fired. :class:`BacklogGauges` counts on a
task and a read connection of its own, whatever shipping is doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from outbox import OutboxError, OutboxReader

from .metrics import Metrics

__all__ = ["BacklogGauges", "nothing_pending"]

log = logging.getLogger(__name__)


class BacklogGauges:
    """Set ``outbox_pending`` and ``outbox_lag_seconds`` from the outbox every ``interval`` seconds."""

    def __init__(self, path: Path, metrics: Metrics, *, interval: float = 1.0) -> None:
        self.path = path
        self.metrics = metrics
        self.interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start counting in the background."""
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name=f"backlog gauges {self.path}")

    async def stop(self) -> None:
        """Stop counting."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        reader = OutboxReader(self.path)
        try:
            await reader.open()
            while True:
                await self.refresh(reader)
                await asyncio.sleep(self.interval)
        except OutboxError as exc:
            log.warning("backlog gauges stopped: %s", exc)
        finally:
            await reader.close()

    async def refresh(self, reader: OutboxReader) -> None:
        """Count the backlog once."""
        status = await reader.status()
        self.metrics.gauges(status.pending, status.oldest_pending_age_s or 0.0)


async def nothing_pending(reader: OutboxReader, cursor: int) -> bool:
    """True when no event waits after ``cursor`` (or the side file's) and no dead letter awaits a retry."""
    try:
        after = max(cursor, await reader.cursor())
        return not await reader.read_pending(1, after=after) and not await reader.read_retries(1)
    except OutboxError:
        return False
