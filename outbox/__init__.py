"""A durable local outbox: append events to SQLite in microseconds, ship them later.

``outbox`` knows SQLite only; shipping to Postgres lives in the ``shipper`` package.
"""

from __future__ import annotations

from .append import Durability, Outbox
from .errors import (
    NotAnOutboxError,
    OutboxClosedError,
    OutboxCorruptError,
    OutboxError,
    OutboxFullError,
    OutboxTextError,
    PayloadError,
)
from .ids import uuid7
from .reader import DeadLetter, Event, OutboxReader, Status, TopicStatus
from .records import EventRows
from .schema import ship_path

__all__ = [
    "Outbox",
    "Durability",
    "OutboxError",
    "PayloadError",
    "OutboxFullError",
    "OutboxClosedError",
    "OutboxCorruptError",
    "OutboxTextError",
    "NotAnOutboxError",
    "OutboxReader",
    "Event",
    "EventRows",
    "DeadLetter",
    "Status",
    "TopicStatus",
    "uuid7",
    "ship_path",
]
