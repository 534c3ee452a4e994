"""discord-outbox for discord.py bots: log every command to a local outbox, ship it to Postgres.

The public face of the distribution, named after it so that a bot project's own ``bot.py`` or
``bot/`` package cannot shadow it::

    from discord_outbox import Outbox, Shipper, log_commands

    log_commands(bot, outbox)   # in setup_hook: every command, button and modal, one row each

It re-exports the everyday API of :mod:`outbox` and :mod:`shipper`, and holds the discord.py
integration (:mod:`discord_outbox.commandlog`). It never imports the top-level ``bot`` package,
the project's own example bot, which is built on this one.
"""

from __future__ import annotations

from outbox import Outbox, OutboxClosedError, OutboxError, OutboxFullError, PayloadError
from shipper import ConnectError, InMemorySink, SchemaError, Shipper, ShipperError

from .commandlog import SUPPORTED, TOPIC, CommandLog, CommandLogStats, command_and_options, log_commands, outcome_of

__all__ = [
    "Outbox",
    "Shipper",
    "log_commands",
    "CommandLog",
    "CommandLogStats",
    "outcome_of",
    "command_and_options",
    "TOPIC",
    "SUPPORTED",
    "InMemorySink",
    "OutboxError",
    "PayloadError",
    "OutboxFullError",
    "OutboxClosedError",
    "ShipperError",
    "ConnectError",
    "SchemaError",
]
