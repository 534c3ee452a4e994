"""Where batches go: a small protocol, and an in-memory sink for users' own tests.

A sink must make delivery exactly-once in effect. Two ways in:

* :meth:`Sink.send` takes a batch in outbox order together with its ledger key
  ``(outbox_id, after_seq)``; the key and the rows commit together, so a batch sent twice (a
  retry after a lost reply, a second shipper) is refused whole and the sink says how far that
  outbox has already got;
* :meth:`Sink.upsert` takes any events (retried dead letters, replays) and skips ids it already
  holds.

Rows the sink refuses are handed to ``set_aside`` *before* the batch commits, so a crash between
the two can never lose them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, runtime_checkable

from outbox import Event

from .errors import LeaseLost
from .routes import COMMAND_REQUIRED, Router
from .rows import COMMAND_TOPIC, Routed

__all__ = ["Batch", "SendResult", "SetAside", "Sink", "InMemorySink"]

SetAside = Callable[[list[tuple[Event, str]]], Awaitable[object]]


@dataclass(frozen=True)
class Batch:
    """Events ``after_seq < seq <= last_seq`` of one outbox, in order."""

    outbox_id: str
    after_seq: int
    last_seq: int
    events: Sequence[Event]
    lease: str | None = None  # the holder token the sink fences the batch with (None: no fence)
    router: Router | None = field(default=None, compare=False, repr=False)  # None: built-in routes only

    @cached_property
    def routed(self) -> Routed:
        """The events split by table (computed once: the shipper's read-ahead does it while the
        previous batch is in flight, so the sink does not do it on the critical path)."""
        return self.routing.route(self.events)

    @property
    def routing(self) -> Router:
        """The router that routes this batch: its own, else the built-in routes."""
        return self.router or _BUILT_IN

    def routed_as(self, routed: Routed) -> None:
        """Set :attr:`routed` to what a router made of these events elsewhere, in steps
        (:mod:`shipper.readahead`); only before anything has read it."""
        if "routed" in self.__dict__:
            raise RuntimeError("this batch is routed already")
        self.__dict__["routed"] = routed  # where cached_property keeps it


_BUILT_IN = Router()


@dataclass
class SendResult:
    """What a send did: rows delivered, rows refused, or how far someone else already got."""

    shipped: int = 0  # rows delivered or found already there: in Postgres either way
    rejected: list[tuple[Event, str]] = field(default_factory=list)
    added: int | None = None  # of ``shipped``, rows that were new (None: not counted)
    already_shipped_to: int | None = None  # set when the ledger refused the batch as a repeat


@runtime_checkable
class Sink(Protocol):
    """Somewhere events can be delivered exactly once in effect."""

    async def open(self) -> None:
        """Connect (again, after a failure)."""

    async def close(self) -> None:
        """Disconnect; safe to call when not connected."""

    async def try_lease(self, outbox_id: str, holder: str, ttl: float, *, renew: bool = False) -> bool:
        """Take this outbox's lease for ``ttl`` seconds (free or expired only), or with ``renew``
        extend it while ``holder`` still holds it; False otherwise. :mod:`shipper.lease`."""

    async def release_lease(self, outbox_id: str, holder: str) -> None:
        """Expire the lease now if ``holder`` holds it."""

    async def position(self, outbox_id: str) -> int:
        """Return the highest seq of this outbox the sink has committed (0 if none)."""

    async def send(self, batch: Batch, set_aside: SetAside) -> SendResult:
        """Deliver a batch atomically with its ledger key; with ``batch.lease`` set, only while that
        holder holds the lease (else raise :class:`~shipper.errors.LeaseLost`, delivering nothing)."""

    async def upsert(self, events: Sequence[Event], set_aside: SetAside | None = None) -> SendResult:
        """Deliver events in any order, skipping ids already delivered."""

    async def missing(self, events: Sequence[Event]) -> list[Event]:
        """Return the events the sink does not hold."""

    async def housekeeping(self, outbox_id: str, retention_s: float) -> None:
        """Forget bookkeeping older than ``retention_s`` (the ledger)."""


class InMemorySink:
    """A sink in a dict, for tests: same guarantees as Postgres, no server.

    ``reject`` lets a test refuse chosen events (return an error text); ``down`` set to an
    exception makes every call raise it, like a database that went away. ``routes`` as for
    :class:`Shipper`: :attr:`rows` is keyed by table. With no catalog to read, the one column
    check it makes is command_calls' NOT NULL ones.
    """

    def __init__(
        self, reject: Callable[[Event], str | None] | None = None, *, routes: Mapping[str, str] | None = None
    ) -> None:
        self.router = Router(routes)
        self.rows: dict[str, dict[str, Event]] = {name: {} for name in self.router.tables}
        self.ledger: dict[tuple[str, int], int] = {}
        self.reject = reject
        self.down: BaseException | None = None
        self.sends = 0
        self.leases: dict[str, tuple[str, float]] = {}  # outbox_id -> (holder, expiry, monotonic)

    def _check(self) -> None:
        if self.down is not None:
            raise self.down

    async def open(self) -> None:
        """Nothing to connect to."""
        self._check()

    async def close(self) -> None:
        """Nothing to disconnect."""

    async def try_lease(self, outbox_id: str, holder: str, ttl: float, *, renew: bool = False) -> bool:
        """Take or renew the lease, like the Postgres row (expiry on this process's clock)."""
        self._check()
        now = time.monotonic()
        current = self.leases.get(outbox_id)
        if renew:
            if current is None or current[0] != holder:
                return False
        elif current is not None and current[1] > now:
            return False
        self.leases[outbox_id] = (holder, now + ttl)
        return True

    async def release_lease(self, outbox_id: str, holder: str) -> None:
        """Expire the lease now if ``holder`` holds it."""
        current = self.leases.get(outbox_id)
        if current is not None and current[0] == holder:
            self.leases[outbox_id] = (holder, 0.0)

    def _fence(self, batch: Batch) -> None:
        if batch.lease is None:
            return
        current = self.leases.get(batch.outbox_id)
        if current is None or current[0] != batch.lease or current[1] <= time.monotonic():
            raise LeaseLost(f"this shipper no longer holds the lease on outbox {batch.outbox_id}")

    async def position(self, outbox_id: str) -> int:
        """Return the last seq the ledger records for this outbox."""
        self._check()
        return max((last for (oid, _), last in self.ledger.items() if oid == outbox_id), default=0)

    async def send(self, batch: Batch, set_aside: SetAside) -> SendResult:
        """Deliver a batch unless its ledger key is already taken."""
        self._check()
        self.sends += 1
        self._fence(batch)
        key = (batch.outbox_id, batch.after_seq)
        if key in self.ledger:
            return SendResult(already_shipped_to=self.ledger[key])
        result = self._take(batch.events)
        if result.rejected:
            await set_aside(result.rejected)
        self.ledger[key] = batch.last_seq
        return result

    async def upsert(self, events: Sequence[Event], set_aside: SetAside | None = None) -> SendResult:
        """Deliver events, skipping ids already held."""
        self._check()
        result = self._take(events)
        if result.rejected and set_aside is not None:
            await set_aside(result.rejected)
        return result

    def _take(self, events: Sequence[Event]) -> SendResult:
        routed = self.router.route(events)
        result = SendResult(rejected=list(routed.refused), added=0)
        for table in routed.tables:
            for event in table.events:
                error = self.reject(event) if self.reject is not None else None
                if error is None and table.name == COMMAND_TOPIC:
                    error = _not_null(event)
                if error is not None:
                    result.rejected.append((event, error))
                    continue
                if event.id not in self.rows[table.name]:
                    self.rows[table.name][event.id] = event
                    result.added = (result.added or 0) + 1
                result.shipped += 1
        return result

    async def missing(self, events: Sequence[Event]) -> list[Event]:
        """Return the events not held."""
        self._check()
        held = self.ids
        return [e for e in events if e.id not in held]

    async def housekeeping(self, outbox_id: str, retention_s: float) -> None:
        """Nothing to forget."""

    @property
    def ids(self) -> set[str]:
        """Every event id delivered, whichever table."""
        return {event_id for table in self.rows.values() for event_id in table}


def _not_null(event: Event) -> str | None:
    data = json.loads(event.payload)
    for name in COMMAND_REQUIRED:
        if data.get(name) is None:
            return f'null value in column "{name}" of relation "command_calls" violates not-null constraint'
    return None
