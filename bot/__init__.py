"""The project's own Discord bot, built on :mod:`discord_outbox`.

An example ladder bot, a local stand-in for Discord's API, and the ``python -m bot`` command line
(``run`` on Discord, ``simulate`` offline, ``demo`` end to end on an embedded Postgres). The
integration itself, ``log_commands(bot, outbox)``, lives in :mod:`discord_outbox`; it is
re-exported here (``from bot import log_commands``) for code written before the move. A bot
project of your own should import it from ``discord_outbox``: its own ``bot.py`` would shadow
this package.
"""

from __future__ import annotations

from discord_outbox.commandlog import TOPIC, CommandLog, CommandLogStats, command_and_options, log_commands, outcome_of
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
