"""Moved to :mod:`discord_outbox.commandlog`; this alias keeps ``bot.commandlog`` imports working."""

from __future__ import annotations

from discord_outbox.commandlog import TOPIC, CommandLog, CommandLogStats, command_and_options, log_commands, outcome_of

__all__ = ["CommandLog", "CommandLogStats", "log_commands", "outcome_of", "command_and_options", "TOPIC"]
