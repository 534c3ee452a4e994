"""A read's events held as SQLite's plain rows (outbox.EventRows): events to whoever looks, and
rows the garbage collector stops tracking, which a batch of named tuples never was."""

from __future__ import annotations

import gc
from pathlib import Path

from outbox import Event, EventRows, Outbox, OutboxReader
from outbox.records import rows_of
from shipper import InMemorySink, Shipper
from shipper.sink import Batch, SendResult, SetAside

TOPICS = ("a", "b", "c")


async def _fill(path: Path, n: int) -> list[str]:
    async with Outbox(path) as ob:
        return [await ob.append(TOPICS[i % 3], {"i": i, "name": f"p{i}"}) for i in range(n)]


async def test_a_read_hands_out_events_with_their_fields_from_exact_tuples(outbox_path: Path) -> None:
    ids = await _fill(outbox_path, 40)
    async with OutboxReader(outbox_path) as reader:
        for on_loop in (False, True):  # the thread's read and the loop's own
            events = await reader.read_pending(30, after=0, on_loop=on_loop)
            assert isinstance(events, EventRows) and len(events) == 30
            assert all(type(e) is Event for e in events)
            assert [e.id for e in events] == ids[:30]
            assert events[0].topic == "a" and events[-1].seq == events[29].seq == max(e.seq for e in events)
            assert isinstance(events[5:10], EventRows) and [e.id for e in events[5:10]] == ids[5:10]
            assert events == list(events) and list(events) == [Event(*row) for row in rows_of(events)]
            assert events != list(events)[1:]
            seq, event_id, topic, payload, created_at = events[3]
            assert (event_id, topic) == (ids[3], "a") and '"i":3' in payload.replace(" ", "") and created_at > 0
            assert all(type(row) is tuple for row in rows_of(events))


async def test_the_collector_untracks_a_read_batch_it_kept_tracking_as_named_tuples(outbox_path: Path) -> None:
    await _fill(outbox_path, 50)
    async with OutboxReader(outbox_path) as reader:
        events = await reader.read_pending(50, after=0, on_loop=True)
        as_named = list(events)
        gc.collect()
        assert not any(map(gc.is_tracked, rows_of(events)))  # nothing left for later collections to traverse
        assert all(map(gc.is_tracked, as_named))  # what a batch of named tuples costs every collection


async def test_rows_of_a_plain_sequence_is_that_sequence() -> None:
    events = [Event(1, "x", "t", "{}", 5)]
    assert rows_of(events) is events
    assert EventRows([]) == [] and not EventRows([])


class _Recording(InMemorySink):
    """A user's sink that reads each event by name, as a sink of its own would."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[int, str, str]] = []

    async def send(self, batch: Batch, set_aside: SetAside) -> SendResult:
        self.seen += [(e.seq, e.id, e.topic) for e in batch.events]
        return await super().send(batch, set_aside)


async def test_a_users_sink_sees_every_event_by_field_name(outbox_path: Path) -> None:
    ids = await _fill(outbox_path, 2_500)  # a few batches, so some come from the read-ahead
    sink = _Recording()
    async with Shipper(outbox_path, sink=sink, batch_size=400) as shipper:
        await shipper.drain(timeout=30)
    assert [event_id for _, event_id, _ in sink.seen] == ids
    assert [topic for _, _, topic in sink.seen] == [TOPICS[i % 3] for i in range(2_500)]
    assert len(sink.ids) == 2_500
