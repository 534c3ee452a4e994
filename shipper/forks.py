"""Telling from Postgres that this outbox is a copy of another, when the files cannot tell.

``outbox.identity`` catches most copies when they are opened (the file's device and inode
changed). A VM clone can keep even those; then two files ship under one ``outbox_id`` and the
ledger, keyed by it, holds ranges that one of them did not ship. The shipper trusts the ledger
in two places -- when it takes the lease (it moves its cursor up to the ledger's end) and when
a batch is refused as a repeat (it skips to where the repeat ended) -- so in both it first asks
Postgres whether its own events in that range are there. Events another shipper of *this* file
shipped are; a copy's are not. Then it forks (a new id, progress kept) instead of skipping them.
"""

from __future__ import annotations

from collections.abc import Sequence

from outbox import Event, OutboxReader

from .sink import Sink

__all__ = ["ledger_is_not_ours", "batch_is_not_ours"]


async def ledger_is_not_ours(reader: OutboxReader, sink: Sink, local: int, remote: int) -> str | None:
    """Why the ledger's ``(local, remote]`` of this id is another file's, or None if it is ours."""
    last = await reader.last_seq()
    if remote > last:
        return (
            f"Postgres holds its events up to seq {remote}, but the file ends at seq {last}"
            " (a copy that went on without it, or a file that lost its end)"
        )
    event = await reader.last_unshipped_within(local, remote)
    if event is not None and await sink.missing([event]):
        return f"Postgres's ledger says seq {event.seq} shipped, but its event {event.id} is not there"
    return None


async def batch_is_not_ours(sink: Sink, events: Sequence[Event], refused: Sequence[Event]) -> str | None:
    """Why a batch refused as a repeat was not this file's to skip, or None if it is in Postgres."""
    skip = {e.seq for e in refused}
    missing = await sink.missing([e for e in events if e.seq not in skip])
    if missing:
        return f"a batch was refused as shipped, but {len(missing)} of its events (first {missing[0].id}) are not in Postgres"
    return None
