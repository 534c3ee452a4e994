"""The project's own Discord bot, built on :mod:`discord_outbox`.

An example ladder bot, a local stand-in for Discord's API, and the ``python -m bot`` command line
(``run`` on Discord, ``simulate`` offline, ``demo`` end to end on an embedded Postgres). The
integration itself, ``log_commands(bot, outbox)``, lives in :mod:`discord_outbox`; it is
re-exported here (``from bot import log_commands``) for code written before the move. A bot
project of your own should import it from ``discord_outbox``: its own ``bot.py`` would shadow
this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from discord_outbox.commandlog import (
        TOPIC,
        CommandLog,
        CommandLogStats,
        command_and_options,
        log_commands,
        outcome_of,
    )

    from .ladder import Ladder, LadderBot, LadderError, LadderTree
    from .standin import DiscordStandIn, Exchange, pointed_at

# Imported when first used, not with the package: ``python -m bot`` imports this file before its
# ``__main__``, and discord.py takes long enough to load that a Ctrl-C would land in it.
_WHERE = {
    **dict.fromkeys(
        ("TOPIC", "CommandLog", "CommandLogStats", "command_and_options", "log_commands", "outcome_of"),
        "discord_outbox.commandlog",
    ),
    **dict.fromkeys(("Ladder", "LadderBot", "LadderError", "LadderTree"), "bot.ladder"),
    **dict.fromkeys(("DiscordStandIn", "Exchange", "pointed_at"), "bot.standin"),
}

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


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module 'bot' has no attribute {name!r}")
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value
    return value
