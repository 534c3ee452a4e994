"""Whatever ``append`` accepts round-trips exactly and is accepted by Postgres ``jsonb``."""

from __future__ import annotations

import asyncio
import json
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from outbox import Outbox, OutboxReader, PayloadError

# Everything JSON can say, and the things Python's json writes that Postgres refuses.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**80), max_value=2**80)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(alphabet=st.characters(codec=None), max_size=20)  # includes NUL and lone surrogates
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)
payloads = st.dictionaries(st.text(alphabet=st.characters(codec=None), max_size=10), values, max_size=6)


def as_decimals(text: str) -> Any:
    """Parse JSON with every number as a Decimal: jsonb keeps numbers as exact decimals and
    rewrites their text (``3.602879701896397e+16`` comes back as ``36028797018963970``)."""
    return json.loads(text, parse_float=Decimal, parse_int=Decimal)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(payload=payloads)
def test_accepted_payloads_round_trip_and_postgres_takes_them(pg_dsn: str, payload: dict[str, Any]) -> None:
    asyncio.run(_check(pg_dsn, payload))


async def _check(dsn: str, payload: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.db"
        async with Outbox(path) as ob:
            try:
                await ob.append("t", payload)
            except PayloadError:
                return  # refused: nothing written, and test_payload checks the reasons
        async with OutboxReader(path) as reader:
            (event,) = await reader.read_pending(1)
    assert json.loads(event.payload) == payload
    conn = await asyncpg.connect(dsn)
    try:
        back = await conn.fetchval("SELECT $1::text::jsonb::text", event.payload)
    finally:
        await conn.close()
    assert as_decimals(back) == as_decimals(event.payload)
