"""Catalog reads in one round trip each, pooler-safe.

With asyncpg's statement cache off (transaction poolers, :mod:`shipper.connection`) every
``fetch`` with parameters is two round trips: prepare, then execute. At 100 ms away the start-up
reads (a route's columns, the partitions) cost more than the drain they precede. So they are
formatted as one JSON value, values quoted here, and read with ``COPY (..) TO STDOUT``: a simple
query, one round trip. The JSON travels hex-encoded, so COPY's text escaping never touches it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import asyncpg

__all__ = ["literal", "text_array", "read_json"]


def literal(text: str) -> str:
    """A string as an SQL literal (``standard_conforming_strings``: only quotes need doubling)."""
    if "\x00" in text:
        raise ValueError("a NUL cannot be in an SQL string")
    return "'" + text.replace("'", "''") + "'"


def text_array(items: Iterable[str]) -> str:
    """Strings as an SQL ``text[]`` expression."""
    return "ARRAY[" + ", ".join(literal(i) for i in items) + "]::text[]"


async def read_json(conn: asyncpg.Connection, expression: str) -> Any:
    """The value of the SQL ``json`` ``expression`` (no parameters), in one round trip."""
    chunks: list[bytes] = []

    async def take(data: bytes) -> None:
        chunks.append(bytes(data))

    await conn.copy_from_query(
        f"SELECT encode(convert_to(coalesce(({expression})::text, 'null'), 'UTF8'), 'hex')", output=take
    )
    return json.loads(bytes.fromhex(b"".join(chunks).decode("ascii").strip()))
