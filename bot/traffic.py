"""Realistic slash-command traffic for the ladder bot: who runs what, where, with which options.

A seeded stream of INTERACTION_CREATE payloads: a dozen players in two guilds and in DMs, every
ladder command with varied options, and a share that fails the way real traffic does (terms not
yet accepted, an unknown country code, a leaderboard page past the end, joining a queue twice).
"""

from __future__ import annotations

import random
from typing import Any

from .ladder import COUNTRIES
from .payloads import Player, Where, option, slash, subcommand, user_option

__all__ = ["Traffic", "COMMANDS"]

# (qualified name, weight): browsing dominates, as on a real ladder
COMMANDS = (
    ("leaderboard", 24),
    ("profile", 22),
    ("queue join", 12),
    ("queue leave", 9),
    ("queue status", 8),
    ("setcountry", 12),
    ("termsofservice", 8),
)
_NAMES = [
    ("kasvi", "Kasvi", None), ("mjolnir", None, "Thor"), ("pixelpaw", "Pixel Paw", None), ("ronin_88", "Ronin", "R88"),
    ("lunaria", "Luna", None), ("bytebard", None, None), ("saltyfries", "Salty", "fries"), ("aurora", "Aurora", None),
    ("nordwind", "Nordwind", None), ("quokka", None, "Q"), ("vesper", "Vesper", None), ("zed", "Zed", "zed (coach)"),
]  # fmt: skip
_BAD_COUNTRIES = ("XX", "Finland", "usa", "🇫🇮", "", "Q1")


class Traffic:
    """An endless, reproducible stream of ``(command, payload)`` for one application."""

    def __init__(self, application_id: int, *, seed: int = 1) -> None:
        self.application_id = application_id
        self.rng = random.Random(seed)
        self.players = [
            Player(id=310_000_000_000_000_000 + 7919 * i, username=u, global_name=g, nick=n)
            for i, (u, g, n) in enumerate(_NAMES)
        ]
        guild_a, guild_b = 810_000_000_000_000_001, 810_000_000_000_000_002
        self.guild_places = [
            Where(guild_id=guild_a, channel_id=820_000_000_000_000_001, channel_name="ladder"),
            Where(guild_id=guild_a, channel_id=820_000_000_000_000_002, channel_name="general"),
            Where(guild_id=guild_b, channel_id=820_000_000_000_000_003, channel_name="ranked"),
        ]
        self._names = [name for name, _ in COMMANDS]
        self._weights = [weight for _, weight in COMMANDS]

    def dm(self, player: Player) -> Where:
        """The DM channel between ``player`` and the bot."""
        return Where(channel_id=830_000_000_000_000_000 + player.id % 1_000_000)

    def next(self) -> tuple[str, dict[str, Any]]:
        """Return the next command's qualified name and its INTERACTION_CREATE payload."""
        rng = self.rng
        name = rng.choices(self._names, self._weights)[0]
        player = rng.choice(self.players)
        where = self.dm(player) if rng.random() < 0.3 else rng.choice(self.guild_places)
        return name, self.payload(name, player, where)

    def payload(self, name: str, player: Player, where: Where) -> dict[str, Any]:
        """Build the payload of ``/name`` run by ``player`` at ``where``, with varied options."""
        rng = self.rng
        options: list[dict[str, Any]] = []
        if name == "leaderboard":
            if rng.random() < 0.6:
                options.append(option("page", rng.choice((1, 1, 1, 2, 2, 3, 4, 5, 6, 9))))
        elif name == "profile":
            if rng.random() < 0.5:
                options.append(user_option("user", rng.choice(self.players)))
        elif name == "setcountry":
            code = rng.choice(list(COUNTRIES)) if rng.random() < 0.8 else rng.choice(_BAD_COUNTRIES)
            options.append(option("country", code.lower() if rng.random() < 0.3 else code))
        elif name.startswith("queue "):
            sub = name.split()[1]
            sub_options = [option("mode", rng.choice(("1v1", "2v2")))] if sub == "join" and rng.random() < 0.7 else []
            options.append(subcommand(sub, *sub_options))
        top = name.split()[0]
        return slash(top, *options, player=player, where=where, application_id=self.application_id)
