"""Operator tools over Postgres: re-ship a range, and prove shipped events are still there.

Both read the outbox in chunks (memory stays flat on any size) and go through the sink's
``ON CONFLICT DO NOTHING`` path, so running them twice is harmless.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from typing import TypeVar

import asyncpg

from outbox import Event, OutboxReader

from .errors import GrantError, SchemaError, ShipperError, classify, hint
from .pgsink import PostgresSink
from .sink import Sink

T = TypeVar("T")

__all__ = ["replay", "verify", "ReplayResult", "VerifyResult"]

_CHUNK = 10_000  # events per upsert: each costs a few round trips, which count across a WAN
_VERIFY_CHUNK = 20_000  # ids per check: one round trip each when none is missing


@dataclass
class ReplayResult:
    """What a replay selected and sent."""

    selected: int = 0
    inserted: int = 0  # rows Postgres did not have before (ids already there are skipped)
    by_topic: dict[str, int] = field(default_factory=dict)
    rejected: int = 0
    unreadable: int = 0  # rows whose text is not valid UTF-8: not sent


@dataclass
class VerifyResult:
    """What a verify checked and found missing."""

    checked: int = 0
    missing: dict[str, int] = field(default_factory=dict)
    missing_ids: list[str] = field(default_factory=list)  # the first 100
    unchecked: int = 0  # rows whose id or topic is not valid UTF-8: nothing to look for

    @property
    def ok(self) -> bool:
        """True when nothing is missing."""
        return not self.missing


async def replay(
    reader: OutboxReader,
    dsn: str | None = None,
    *,
    since_us: int | None = None,
    until_us: int | None = None,
    topic: str | None = None,
    dry_run: bool = False,
    progress: Callable[[int], None] | None = None,
    sink: Sink | None = None,
    schema: str = "public",
    routes: Mapping[str, str] | None = None,
    unreadable: Callable[[Event, str], object] | None = None,
) -> ReplayResult:
    """Send the selected events (shipped ones too) again; ids already in Postgres are skipped.

    Dead letters are left out: they have their own way back (``outbox dead retry``). So is an
    event whose text is not valid UTF-8 (its payload cannot be sent): it is counted and handed
    to ``unreadable`` with why, and the rest are sent.
    """
    result = ReplayResult()

    def unreadable_row(event: Event, why: str) -> None:
        result.unreadable += 1
        if unreadable is not None:
            unreadable(event, why)

    by_topic: Counter[str] = Counter()
    own = sink is None and not dry_run
    if own:
        assert dsn is not None, "replay needs a dsn or a sink"
        sink = PostgresSink(dsn, schema=schema, routes=routes)
    try:
        if sink is not None and not dry_run:
            await sink.open()
        events = reader.iter_events(
            since_us=since_us, until_us=until_us, topic=topic, skip_set_aside=True, chunk=_CHUNK, unreadable=unreadable_row
        )
        async for chunk in events:
            result.selected += len(chunk)
            by_topic.update(e.topic for e in chunk)
            if not dry_run and sink is not None:
                sent = await _wrapped(sink.upsert(chunk))
                result.inserted += sent.shipped if sent.added is None else sent.added
                result.rejected += len(sent.rejected)
            if progress is not None:
                progress(len(chunk))
    finally:
        if own and sink is not None:
            await sink.close()
    result.by_topic = dict(by_topic)
    return result


async def verify(
    reader: OutboxReader,
    dsn: str | None = None,
    *,
    progress: Callable[[int], None] | None = None,
    sink: Sink | None = None,
    schema: str = "public",
    routes: Mapping[str, str] | None = None,
    unreadable: Callable[[Event, str], object] | None = None,
) -> VerifyResult:
    """Check that every shipped event still in the outbox is present in Postgres.

    A shipped event whose text went bad on disk (not valid UTF-8) is still checked when only
    its payload is damaged: the check needs its id and topic, not its payload. One whose id or
    topic is damaged cannot be looked for, and is counted as ``unchecked``. Each goes to
    ``unreadable`` with why, and whether it was checked.
    """
    result = VerifyResult()
    missing: Counter[str] = Counter()
    by_id: list[Event] = []  # unreadable rows checked all the same

    def unreadable_row(event: Event, why: str) -> None:
        if why.startswith("payload "):  # problems are listed id, topic, payload: only the payload
            by_id.append(event)
            why += "; checked by its id"
        else:
            result.unchecked += 1
            why += "; not checked"
        if unreadable is not None:
            unreadable(event, why)

    async def check(events: list[Event], sink: Sink) -> None:
        result.checked += len(events)
        for event in await _wrapped(sink.missing(events)):
            missing[event.topic] += 1
            if len(result.missing_ids) < 100:
                result.missing_ids.append(event.id)

    own = sink is None
    if sink is None:
        assert dsn is not None, "verify needs a dsn or a sink"
        sink = PostgresSink(dsn, migrate=False, schema=schema, routes=routes)
    try:
        await sink.open()
        async for chunk in reader.iter_events(shipped_only=True, chunk=_VERIFY_CHUNK, unreadable=unreadable_row):
            await check(chunk + by_id, sink)
            if progress is not None:
                progress(len(chunk) + len(by_id))
            by_id.clear()
        if by_id:  # from a last read that held no readable event
            await check(by_id, sink)
    finally:
        if own:
            await sink.close()
    result.missing = dict(missing)
    return result


async def _wrapped(call: Awaitable[T]) -> T:
    """Translate driver errors at this one point: operators see a SchemaError or ShipperError."""
    try:
        return await call
    except asyncpg.PostgresError as exc:
        text = " ".join(str(exc).split())
        kind = classify(exc)
        if kind == "permission":
            raise GrantError(f"Postgres refused: {text}{hint(exc, kind)}") from None
        if kind == "schema":
            raise SchemaError(f"{text}{hint(exc, kind)}") from None
        raise ShipperError(f"Postgres refused: {text}{hint(exc, kind)}") from None
    except (OSError, asyncpg.InterfaceError) as exc:
        raise ShipperError(f"lost the connection to Postgres: {exc}") from None
