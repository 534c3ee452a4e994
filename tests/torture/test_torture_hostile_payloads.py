"""Hypothesis-made topics and payloads, end to end: what ``append`` accepts, Postgres takes.

Each example appends a handful of generated events to a fresh outbox, ships them with the real
``Shipper`` and reads them back. Every accepted event must come back equal (``outbox_events``),
or land in ``command_calls``, or -- only a ``command_calls`` event whose payload cannot fill that
table's typed columns -- be a dead letter with a reason. Nothing may stay pending: a payload the
shipper cannot route must never block the ones behind it.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from outbox import Outbox, OutboxReader, PayloadError
from shipper import Shipper
from torture_kit import SIZES, Tally, dead_ids, pick

INJECTIONS = [
    "x'); DROP TABLE outbox_events;--",
    'x"); DROP TABLE command_calls; --',
    "'; COPY outbox_ledger TO '/tmp/pwned'; --",
    "$1",
    "%s",
    "?",
    "\\",
    "command_calls ",
    "COMMAND_CALLS",
    "command_calls\u200b",
    "outbox_events",
]

huge_ints = st.integers(min_value=-(10**400), max_value=10**400)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | huge_ints
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(codec=None), max_size=30)  # NUL and lone surrogates included
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=25,
)
plain_payloads = st.dictionaries(st.text(alphabet=st.characters(codec=None), max_size=12), values, max_size=6)
command_payloads = st.fixed_dictionaries(
    {},
    optional={
        "discord_uid": st.integers(min_value=-(2**64), max_value=2**64) | st.text(max_size=25) | scalars,
        "command": st.text(max_size=20) | scalars,
        "player_name": st.text(alphabet=st.characters(codec=None), max_size=20) | scalars,
        "guild_id": st.integers(min_value=-(2**64), max_value=2**64) | scalars,
        "channel_id": st.integers(min_value=-(2**64), max_value=2**64) | scalars,
        "options": plain_payloads | scalars,
        "outcome": st.text(max_size=10) | scalars,
        "latency_ms": st.floats() | huge_ints | scalars,
    },
)
topics = st.sampled_from(INJECTIONS) | st.text(alphabet=st.characters(codec=None), min_size=0, max_size=40)
events = st.lists(
    st.one_of(st.tuples(topics, plain_payloads), st.tuples(st.just("command_calls"), command_payloads)),
    min_size=1,
    max_size=6,
)


def as_decimals(text: str) -> Any:
    """JSON with every number a Decimal: jsonb keeps numbers exact but rewrites their text."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


def as_text(value: Any) -> str:
    """What a ``text`` column holds for a JSON value: a string as it is, any other value as
    Postgres's text input of its JSON (``false``, ``12``, ``1.5``): routes let Postgres convert."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


class Totals:
    def __init__(self) -> None:
        self.offered = 0
        self.refused_by_append = 0
        self.accepted: list[str] = []
        self.dead: set[str] = set()
        self.examples = 0


async def ship_and_check(dsn: str, batch: list[tuple[str, dict[str, Any]]], totals: Totals) -> None:
    totals.examples += 1
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.db"
        accepted: dict[str, tuple[str, dict[str, Any]]] = {}
        async with Outbox(path) as ob:
            for topic, payload in batch:
                totals.offered += 1
                try:
                    accepted[await ob.append(topic, payload)] = (topic, payload)
                except PayloadError:
                    totals.refused_by_append += 1
        async with Shipper(path, dsn, backoff_cap=0.2) as s:
            await s.drain(timeout=30)
        async with OutboxReader(path) as reader:
            status = await reader.status()
            letters = {d.id: d for d in await reader.dead_letters()}
        assert status.pending == 0, f"events stuck pending: {status.last_error}"
        dead = dead_ids(path)
    totals.accepted += accepted
    totals.dead |= dead
    conn = await asyncpg.connect(dsn)
    try:
        for event_id, (topic, payload) in accepted.items():
            if topic == "command_calls":
                row = await conn.fetchrow("SELECT command FROM command_calls WHERE id = $1::uuid", event_id)
                if event_id in dead:
                    assert row is None and letters[event_id].error, letters[event_id]
                else:
                    assert row is not None and row["command"] == as_text(payload["command"]), (event_id, payload)
                continue
            assert event_id not in dead, f"a {topic!r} event was refused: {letters[event_id].error}"
            row = await conn.fetchrow("SELECT topic, payload::text FROM outbox_events WHERE id = $1::uuid", event_id)
            assert row is not None, (topic, payload)
            assert row["topic"] == topic
            assert as_decimals(row["payload"]) == as_decimals(json.dumps(payload, ensure_ascii=False))
        tables = {r[0] for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"outbox_events", "command_calls", "outbox_ledger"} <= tables, "a topic changed the schema"
    finally:
        await conn.close()


@pytest.mark.parametrize("size", SIZES)
def test_generated_topics_and_payloads_reach_postgres_intact(size: str, pg_dsn: str, tally: Tally) -> None:
    totals = Totals()

    @settings(
        max_examples=pick(size, 40, 600),
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=events)
    @example(batch=[("command_calls", {"discord_uid": 1, "command": "x", "latency_ms": 10**400}), ("t", {"after": 1})])
    @example(batch=[("command_calls", {"discord_uid": 10**30, "command": "x"}), ("t", {"n": -(10**400)})])
    @example(batch=[("command_calls", {"discord_uid": 0, "command": False}), ("command_calls", {"discord_uid": 1, "command": 7})])
    @example(batch=[(topic, {"topic": topic}) for topic in INJECTIONS[:6]])
    def check(batch: list[tuple[str, dict[str, Any]]]) -> None:
        asyncio.run(ship_and_check(pg_dsn, batch, totals))

    check()
    tally.faults, tally.fault = totals.offered, "generated events offered"
    tally.notes.update(examples=totals.examples, refused_by_append=totals.refused_by_append)
    asyncio.run(tally.settle(pg_dsn, totals.accepted, dead=totals.dead, expected_dead=len(totals.dead), keyed=False))
