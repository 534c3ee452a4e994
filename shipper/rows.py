"""Route events to tables and turn them into rows, touching the JSON only where a table needs it.

``outbox_events`` rows carry the payload text exactly as the outbox stored it (asyncpg sends
``jsonb`` from text), so the common case neither decodes nor re-encodes. ``command_calls`` has
typed columns, so those payloads are decoded once; a payload that cannot fill them is refused here,
before Postgres sees it, and becomes a dead letter.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from outbox import Event

from .migrate import COMMAND_TABLE, EVENT_TABLE

__all__ = ["EVENT_COLUMNS", "COMMAND_COLUMNS", "Routed", "route", "COMMAND_TOPIC"]

COMMAND_TOPIC = "command_calls"
EVENT_COLUMNS = ("id", "topic", "payload", "created_at")
COMMAND_COLUMNS = (
    "id",
    "discord_uid",
    "player_name",
    "command",
    "guild_id",
    "channel_id",
    "options",
    "outcome",
    "latency_ms",
    "created_at",
)
_BIGINT = (-(2**63), 2**63 - 1)


@dataclass
class Table:
    """Rows bound for one table, each beside the event it came from."""

    name: str
    columns: tuple[str, ...]
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)


@dataclass
class Routed:
    """A batch split by destination, plus what was refused before reaching Postgres."""

    tables: list[Table]
    refused: list[tuple[Event, str]]


def route(events: Sequence[Event]) -> Routed:
    """Split ``events`` into per-table rows; refuse command events that cannot fill the columns."""
    plain = Table(EVENT_TABLE, EVENT_COLUMNS)
    commands = Table(COMMAND_TABLE, COMMAND_COLUMNS)
    refused: list[tuple[Event, str]] = []
    for event in events:
        if event.topic != COMMAND_TOPIC:
            plain.rows.append((event.id, event.topic, event.payload, event.created_at))
            plain.events.append(event)
            continue
        try:
            commands.rows.append(command_row(event))
        except ValueError as exc:
            refused.append((event, f"command_calls event refused: {exc}"))
            continue
        commands.events.append(event)
    return Routed([t for t in (plain, commands) if t.rows], refused)


def command_row(event: Event) -> tuple[Any, ...]:
    """Return the ``command_calls`` row of a command event, or raise ValueError saying why not."""
    data = json.loads(event.payload)
    uid = _bigint(data.get("discord_uid"), "discord_uid", required=True)
    command = data.get("command")
    if not isinstance(command, str) or not command:
        raise ValueError("command must be a non-empty string")
    options = data.get("options")
    if options is not None and not isinstance(options, dict):
        raise ValueError("options must be an object")
    latency = data.get("latency_ms")
    if latency is not None and (isinstance(latency, bool) or not isinstance(latency, (int, float))):
        raise ValueError("latency_ms must be a number")
    try:
        latency_ms = None if latency is None else float(latency)
    except OverflowError:  # an int past 1.8e308: refused here, or it would stall the batch forever
        raise ValueError("latency_ms is too large for a double precision column") from None
    return (
        event.id,
        uid,
        _text(data.get("player_name"), "player_name"),
        command,
        _bigint(data.get("guild_id"), "guild_id"),
        _bigint(data.get("channel_id"), "channel_id"),
        None if options is None else json.dumps(options, ensure_ascii=False, separators=(",", ":")),
        _text(data.get("outcome"), "outcome"),
        latency_ms,
        event.created_at,
    )


def _bigint(value: Any, name: str, *, required: bool = False) -> int | None:
    if value is None:
        if required:
            raise ValueError(f"{name} is missing")
        return None
    if isinstance(value, str) and value.isdigit():  # Discord snowflakes often travel as strings
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer, not {type(value).__name__}")
    if not _BIGINT[0] <= value <= _BIGINT[1]:
        raise ValueError(f"{name} {value} does not fit a bigint")
    return value


def _text(value: Any, name: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{name} must be a string, not {type(value).__name__}")
