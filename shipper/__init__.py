"""Ship outbox events to Postgres in batches, exactly once in effect, through every failure.

``shipper`` knows the outbox and Postgres; it never imports discord.
"""

from __future__ import annotations

from .dsn import redact_dsn
from .errors import ConnectError, SchemaError, ShipperError
from .loop import Shipper, ShipperStats
from .migrate import SCHEMA_VERSION, migrate
from .pgsink import PostgresSink
from .replay import ReplayResult, VerifyResult, replay, verify
from .sink import Batch, InMemorySink, SendResult, Sink

__all__ = [
    "Shipper",
    "ShipperStats",
    "ShipperError",
    "ConnectError",
    "SchemaError",
    "Sink",
    "Batch",
    "SendResult",
    "InMemorySink",
    "PostgresSink",
    "migrate",
    "SCHEMA_VERSION",
    "replay",
    "verify",
    "ReplayResult",
    "VerifyResult",
    "redact_dsn",
]
