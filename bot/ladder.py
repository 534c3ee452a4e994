"""A small ladder bot, in memory, showing what the command log records for free.

Commands: ``/leaderboard [page]``, ``/profile [user]``, ``/queue join|leave|status`` (a group),
``/setcountry country``, ``/termsofservice`` and ``/challenge opponent`` (Accept/Decline buttons,
then it waits for the answer, as ``view.wait()`` does). Queueing and setting a country need the terms
accepted first (a check that can fail); ``/setcountry`` raises on an unknown code and
``/queue join`` raises when already queued (commands that raise). None of them contains a line
of logging: :func:`discord_outbox.log_commands` in :meth:`LadderBot.setup_hook` does it all.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass, field
from collections.abc import Callable
from typing import Any, Literal, TypeVar

import discord
from discord import app_commands

from discord_outbox import CommandLog, log_commands
from outbox import Outbox

__all__ = ["Ladder", "LadderBot", "LadderError", "LadderTree", "ChallengeView", "PlayerRecord", "COUNTRIES", "PAGE_SIZE"]

log = logging.getLogger(__name__)

PAGE_SIZE = 10
COUNTRIES = {
    "AR": "Argentina", "AU": "Australia", "BR": "Brazil", "CA": "Canada", "CN": "China", "DE": "Germany",
    "ES": "Spain", "FI": "Finland", "FR": "France", "GB": "United Kingdom", "IN": "India", "IT": "Italy",
    "JP": "Japan", "KR": "South Korea", "MX": "Mexico", "NL": "Netherlands", "NO": "Norway", "PL": "Poland",
    "SE": "Sweden", "UA": "Ukraine", "US": "United States",
}  # fmt: skip
TERMS = (
    "Ladder terms of service: play fair, no smurfing, no abuse. Your Discord id, display name and "
    "commands are recorded to run the ladder. Accepted."
)
Mode = Literal["1v1", "2v2"]
_T = TypeVar("_T")


class LadderError(Exception):
    """Something a player asked for cannot be done; the message says why."""


@dataclass
class PlayerRecord:
    """One player's standing."""

    uid: int
    name: str
    rating: int = 1500
    wins: int = 0
    losses: int = 0
    country: str | None = None
    accepted_terms: bool = False


@dataclass
class Ladder:
    """The ladder's whole state: players and the matchmaking queues."""

    players: dict[int, PlayerRecord] = field(default_factory=dict)
    queues: dict[str, list[int]] = field(default_factory=lambda: {"1v1": [], "2v2": []})

    @classmethod
    def seeded(cls, n: int = 45, *, seed: int = 7) -> Ladder:
        """A ladder with ``n`` made-up players, so the leaderboard has pages."""
        rng = random.Random(seed)
        ladder = cls()
        for i in range(n):
            uid = 900_000_000_000_000_000 + i
            wins, losses = rng.randint(0, 80), rng.randint(0, 80)
            ladder.players[uid] = PlayerRecord(
                uid, f"player{i:02d}", rng.randint(1100, 2300), wins, losses, rng.choice(list(COUNTRIES)), True
            )
        return ladder

    def player(self, uid: int, name: str) -> PlayerRecord:
        """Return the player ``uid``, registering them on first sight."""
        record = self.players.get(uid)
        if record is None:
            record = self.players[uid] = PlayerRecord(uid, name)
        record.name = name
        return record

    def page(self, page: int) -> list[tuple[int, PlayerRecord]]:
        """Return ``(rank, player)`` for one page of the leaderboard (1-based)."""
        ranked = sorted(self.players.values(), key=lambda p: (-p.rating, p.uid))
        start = (page - 1) * PAGE_SIZE
        if page > 1 and start >= len(ranked):
            raise LadderError(f"there is no page {page}; the leaderboard has {self.pages} pages")
        return list(enumerate(ranked[start : start + PAGE_SIZE], start + 1))

    @property
    def pages(self) -> int:
        """Number of leaderboard pages."""
        return max(1, -(-len(self.players) // PAGE_SIZE))

    def join(self, uid: int, mode: str) -> int:
        """Queue ``uid`` for ``mode``; return their place in the queue."""
        for queued_mode, queue in self.queues.items():
            if uid in queue:
                raise LadderError(f"you are already queued for {queued_mode}; /queue leave first")
        self.queues[mode].append(uid)
        return len(self.queues[mode])

    def leave(self, uid: int) -> str | None:
        """Take ``uid`` out of any queue; return the mode they were queued for."""
        for mode, queue in self.queues.items():
            if uid in queue:
                queue.remove(uid)
                return mode
        return None


def _requires_terms(ladder: Ladder) -> Callable[[_T], _T]:
    async def predicate(interaction: discord.Interaction[Any]) -> bool:
        record = ladder.players.get(interaction.user.id)
        if record is None or not record.accepted_terms:
            raise app_commands.CheckFailure("accept the rules with /termsofservice first")
        return True

    return app_commands.check(predicate)


def add_commands(tree: app_commands.CommandTree[Any], ladder: Ladder) -> None:
    """Register the ladder's commands on ``tree`` (global, so they work in guilds and DMs)."""
    requires_terms = _requires_terms(ladder)

    @tree.command(description="Show the leaderboard, 10 players a page")
    @app_commands.describe(page="Which page (1 is the top)")
    async def leaderboard(interaction: discord.Interaction[Any], page: app_commands.Range[int, 1, 1000] = 1) -> None:
        rows = ladder.page(page)
        lines = [f"{rank:>3}. {p.name} {p.rating} ({p.wins}-{p.losses})" for rank, p in rows]
        await interaction.response.send_message(f"Leaderboard, page {page}/{ladder.pages}\n" + "\n".join(lines))

    @tree.command(description="Show a player's rating and record")
    @app_commands.describe(user="Whose profile (you, if left out)")
    async def profile(interaction: discord.Interaction[Any], user: discord.User | None = None) -> None:
        target = user or interaction.user
        record = ladder.players.get(target.id)
        if record is None:
            await interaction.response.send_message(f"{target.display_name} has not played yet.", ephemeral=True)
            return
        country = COUNTRIES.get(record.country or "", "unknown country")
        await interaction.response.send_message(
            f"{record.name}: rating {record.rating}, {record.wins} wins, {record.losses} losses, {country}"
        )

    @tree.command(description="Set the country shown on your profile")
    @app_commands.describe(country="Two-letter country code, such as FI or BR")
    @requires_terms
    async def setcountry(interaction: discord.Interaction[Any], country: str) -> None:
        code = country.strip().upper()
        if code not in COUNTRIES:
            raise LadderError(f"unknown country code {country!r}; use two letters, such as FI or BR")
        ladder.player(interaction.user.id, interaction.user.display_name).country = code
        await interaction.response.send_message(f"Country set to {COUNTRIES[code]}.", ephemeral=True)

    @setcountry.autocomplete("country")
    async def country_choices(interaction: discord.Interaction[Any], current: str) -> list[app_commands.Choice[str]]:
        typed = current.strip().lower()
        matches = [(code, name) for code, name in COUNTRIES.items() if typed in f"{code} {name}".lower()]
        return [app_commands.Choice(name=f"{name} ({code})", value=code) for code, name in matches[:25]]

    @tree.command(description="Read and accept the ladder's rules")
    async def termsofservice(interaction: discord.Interaction[Any]) -> None:
        ladder.player(interaction.user.id, interaction.user.display_name).accepted_terms = True
        await interaction.response.send_message(TERMS, ephemeral=True)

    queue = app_commands.Group(name="queue", description="Matchmaking queue")

    @queue.command(description="Join the matchmaking queue")
    @app_commands.describe(mode="Game mode")
    @requires_terms
    async def join(interaction: discord.Interaction[Any], mode: Mode = "1v1") -> None:
        place = ladder.join(interaction.user.id, mode)
        await interaction.response.send_message(f"Queued for {mode}: you are number {place}.", ephemeral=True)

    @queue.command(description="Leave the matchmaking queue")
    @requires_terms
    async def leave(interaction: discord.Interaction[Any]) -> None:
        mode = ladder.leave(interaction.user.id)
        text = f"Left the {mode} queue." if mode else "You were not queued."
        await interaction.response.send_message(text, ephemeral=True)

    @queue.command(description="Show how many players are queued")
    async def status(interaction: discord.Interaction[Any]) -> None:
        counts = ", ".join(f"{mode}: {len(q)}" for mode, q in ladder.queues.items())
        await interaction.response.send_message(f"Queued now: {counts}")

    tree.add_command(queue)

    @tree.command(description="Challenge a player to a match")
    @app_commands.describe(opponent="Who you challenge")
    async def challenge(interaction: discord.Interaction[Any], opponent: discord.User) -> None:
        if opponent.id == interaction.user.id:
            raise LadderError("you cannot challenge yourself")
        view = ChallengeView(opponent.id)
        await interaction.response.send_message(f"{opponent.mention}, {interaction.user.display_name} challenges you", view=view)
        await view.wait()  # still running here when the bot shuts down: logged as interrupted
        if view.accepted is None:
            text = "Challenge expired."
        else:
            text = "Challenge accepted: match on!" if view.accepted else "Challenge declined."
        await interaction.followup.send(text)


class ChallengeView(discord.ui.View):
    """Accept or decline a challenge; only the player challenged may answer."""

    def __init__(self, opponent_id: int, timeout: float = 300.0) -> None:
        super().__init__(timeout=timeout)
        self.opponent_id = opponent_id
        self.accepted: bool | None = None

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        if interaction.user.id != self.opponent_id:
            await interaction.response.send_message("This challenge is not yours.", ephemeral=True)
            return False
        return True

    @discord.ui.button(label="Accept", style=discord.ButtonStyle.success, custom_id="challenge:accept")
    async def accept(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]) -> None:
        await self._answer(interaction, True)

    @discord.ui.button(label="Decline", style=discord.ButtonStyle.danger, custom_id="challenge:decline")
    async def decline(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]) -> None:
        await self._answer(interaction, False)

    async def _answer(self, interaction: discord.Interaction[Any], accepted: bool) -> None:
        self.accepted = accepted
        await interaction.response.send_message("Accepted." if accepted else "Declined.", ephemeral=True)
        self.stop()


class LadderTree(app_commands.CommandTree[Any]):
    """The ladder's command tree: turns failures into a polite ephemeral reply."""

    async def on_error(self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError, /) -> None:
        original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
        if isinstance(original, (LadderError, app_commands.CheckFailure)):
            text = f"Sorry: {original}"
        else:
            log.error("command %s failed", interaction.command and interaction.command.qualified_name, exc_info=error)
            text = "Something went wrong; the ladder admins have been told."
        if interaction.response.is_done():
            await interaction.followup.send(text, ephemeral=True)
        else:
            await interaction.response.send_message(text, ephemeral=True)


class LadderBot(discord.Client):
    """The ladder bot; every command and button press is logged to ``outbox`` when one is given.

    Parameters
    ----------
    outbox:
        An open outbox to log commands to; ``None`` runs without logging.
    ladder:
        The state to serve (a seeded one by default).
    sync:
        Push the command definitions to Discord at start-up (needed once, and after changes).
    tree_cls:
        A :class:`LadderTree` subclass to use (a client has exactly one tree).
    """

    def __init__(
        self,
        *,
        outbox: Outbox | None = None,
        ladder: Ladder | None = None,
        sync: bool = False,
        tree_cls: type[LadderTree] | None = None,
    ) -> None:
        super().__init__(intents=discord.Intents(guilds=True))
        self.tree = (tree_cls or LadderTree)(self)
        self.ladder = ladder or Ladder.seeded()
        self.outbox = outbox
        self.sync = sync
        self.command_log: CommandLog | None = None
        add_commands(self.tree, self.ladder)

    async def setup_hook(self) -> None:
        if self.outbox is not None:
            self.command_log = log_commands(self, self.outbox)  # the one line: commands, buttons, modals
        if self.sync:
            synced = await self.tree.sync()
            log.info("synced %d commands with Discord", len(synced))
