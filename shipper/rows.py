"""Route events to tables and turn them into rows, touching the JSON only where a table needs it.

``outbox_events`` rows carry the payload text exactly as the outbox stored it (asyncpg sends
``jsonb`` from text), so the common case neither decodes nor re-encodes. ``command_calls`` has
typed columns, so those payloads are decoded once; a payload that cannot fill them is refused here,
before Postgres sees it, and becomes a dead letter.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from outbox import Event
from outbox.payload import compact_json

from .migrate import COMMAND_TABLE, EVENT_TABLE

__all__ = ["EVENT_COLUMNS", "COMMAND_COLUMNS", "Routed", "Table", "route", "events_copy_text", "COMMAND_TOPIC"]

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
    "kind",
    "application_id",
)
_BIGINT = (-(2**63), 2**63 - 1)
assert EVENT_COLUMNS == Event._fields[1:], "outbox_events rows are events without their seq"


@dataclass
class Table:
    """Rows bound for one table, each beside the event it came from.

    ``outbox_events`` rows are the events' own fields, so they are made only if asked for
    (:attr:`rows`): the fast path sends :meth:`copy_text` instead.
    """

    name: str
    columns: tuple[str, ...]
    events: list[Event] = field(default_factory=list)
    _rows: list[tuple[Any, ...]] | None = field(default=None, repr=False)  # None: made from events
    _text: bytes | None = field(default=None, repr=False)

    @property
    def rows(self) -> list[tuple[Any, ...]]:
        """One tuple per event, in :attr:`columns` order."""
        if self._rows is None:
            self._rows = [event[1:] for event in self.events]  # EVENT_COLUMNS: all but seq
        return self._rows

    def copy_text(self) -> bytes | None:
        """The rows in COPY's text format, or None where binary COPY of :attr:`rows` must do.

        Only ``outbox_events`` rows, whose payload is already JSON text: built once (the
        shipper's read-ahead does it while the previous batch is in flight), it leaves the
        send nothing to encode, where a binary COPY encodes every value on the critical path.
        """
        if self._text is None and self.name == EVENT_TABLE and self.events:
            self._text = events_copy_text(self.events)
        return self._text


@dataclass
class Routed:
    """A batch split by destination, plus what was refused before reaching Postgres."""

    tables: list[Table]
    refused: list[tuple[Event, str]]


def route(events: Sequence[Event]) -> Routed:
    """Split ``events`` into per-table rows; refuse command events that cannot fill the columns."""
    plain = Table(EVENT_TABLE, EVENT_COLUMNS)
    commands = Table(COMMAND_TABLE, COMMAND_COLUMNS, _rows=[])
    refused: list[tuple[Event, str]] = []
    for event in events:
        if event.topic != COMMAND_TOPIC:
            plain.events.append(event)
            continue
        try:
            commands.rows.append(command_row(event))
        except Exception as exc:  # whatever one payload makes fail (RecursionError too) is a dead letter, never a retry
            refused.append((event, f"command_calls event refused: {exc}"))
            continue
        commands.events.append(event)
    return Routed([t for t in (plain, commands) if t.events], refused)


# COPY's text format: a backslash starts an escape; tab, newline and CR separate fields and rows.
_MAX_US = 253_402_300_800_000_000  # 10000-01-01: past it the year needs five digits


def _copy_escape(text: str) -> str:
    if "\\" in text or "\t" in text or "\n" in text or "\r" in text:
        return text.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return text


def events_copy_text(events: Sequence[Event]) -> bytes | None:
    """Events as ``outbox_events`` rows in COPY text, UTF-8; None if one cannot be.

    ``created_at`` (Unix microseconds) is written as a UTC timestamp; the date part is formatted
    once per second, which events made close together share. None (the caller then sends the
    rows in binary, which refuses a bad one row by row) for a time before 1970 or past 9999, a
    time that is not an integer, or text that is not valid UTF-8.
    """
    out: list[str] = []
    last_second, prefix = -1, ""
    try:
        for _, event_id, topic, payload, us in events:
            if type(us) is not int or not 0 <= us < _MAX_US:
                return None
            second, micro = divmod(us, 1_000_000)
            if second != last_second:
                last_second, prefix = second, time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
            out.append(f"{event_id}\t{_copy_escape(topic)}\t{_copy_escape(payload)}\t{prefix}.{micro:06d}+00\n")
        return "".join(out).encode("utf-8")
    except (TypeError, UnicodeEncodeError):
        return None


_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _decode(text: str) -> Any:
    """``json.loads`` without its wrapper's regex passes (the outbox stores compact JSON);
    anything unusual goes through ``json.loads`` itself, for its exact error."""
    try:
        value, end = _scan(text, 0)
    except (StopIteration, ValueError):
        end = -1
    return value if end == len(text) else json.loads(text)


def command_row(event: Event) -> tuple[Any, ...]:
    """Return the ``command_calls`` row of a command event, or raise ValueError saying why not."""
    data = _decode(event.payload)
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
        None if options is None else compact_json(options),
        _text(data.get("outcome"), "outcome"),
        latency_ms,
        event.created_at,
        _text(data.get("kind"), "kind"),
        _bigint(data.get("application_id"), "application_id"),
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
