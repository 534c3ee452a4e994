"""Sending one batch through a real sink and collecting what it refused, for tests that compare
what lands one way against another."""

from __future__ import annotations

from outbox import Event
from shipper import Batch, PostgresSink
from shipper.sink import SendResult


async def send_collecting(sink: PostgresSink, batch: Batch) -> tuple[SendResult, list[tuple[str, str]]]:
    """Send ``batch``; return the result and every refused event as (id, reason), sorted: those
    set aside before the commit and those the result names, each once."""
    refused: list[tuple[str, str]] = []

    async def set_aside(failures: list[tuple[Event, str]]) -> None:
        refused.extend((e.id, why) for e, why in failures)

    result = await sink.send(batch, set_aside)
    refused.extend((e.id, why) for e, why in result.rejected if (e.id, why) not in refused)
    return result, sorted(refused)
