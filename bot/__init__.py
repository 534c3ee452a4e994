"""Log every slash command of a discord.py bot to the outbox, with one line of setup.

``log_commands(bot.tree, outbox)`` (see :mod:`bot.commandlog`) is the integration; the rest is
an example ladder bot, a local stand-in for Discord's API, and the ``python -m bot`` command
line (``run`` on Discord, ``simulate`` offline, ``demo`` end to end on an embedded Postgres).
"""

from __future__ import annotations

from .commandlog import TOPIC, CommandLog, CommandLogStats, command_and_options, log_commands, outcome_of
from .ladder import Ladder, LadderBot, LadderError, LadderTree
from .standin import DiscordStandIn, Exchange, pointed_at

__all__ = [
    "log_commands",
    "CommandLog",
    "CommandLogStats",
    "outcome_of",
    "command_and_options",
    "TOPIC",
    "LadderBot",
    "LadderTree",
    "Ladder",
    "LadderError",
    "DiscordStandIn",
    "Exchange",
    "pointed_at",
]
