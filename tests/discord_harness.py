"""Run a real discord.py bot offline for the tests, through its own dispatch.

The bot logs in to :class:`bot.standin.DiscordStandIn` over loopback HTTP; payloads go to the
``INTERACTION_CREATE`` parser the gateway would call; responses are read where they land, at the
HTTP layer. Every wait has a timeout, and ``Route.BASE`` is restored on the way out.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import discord

from discord_outbox import CommandLog
from bot.ladder import LadderBot
from bot.payloads import Player, Where, dispatch, slash
from bot.standin import DiscordStandIn, Exchange, pointed_at
from outbox import Outbox, OutboxReader

__all__ = ["BotHarness", "running_bot", "ALICE", "BOB", "GUILD", "GUILD_ID", "CHANNEL_ID", "dm_of", "outbox_rows"]

GUILD_ID = 810_000_000_000_000_101
CHANNEL_ID = 820_000_000_000_000_101
GUILD = Where(guild_id=GUILD_ID, channel_id=CHANNEL_ID, channel_name="ladder")
ALICE = Player(id=310_000_000_000_000_001, username="alice", global_name="Alice", nick="Ali (captain)")
BOB = Player(id=310_000_000_000_000_002, username="bob", global_name=None, nick=None)
TIMEOUT = 10.0
# the tasks discord.py runs commands, prefix messages, components and modals in
COMMAND_TASKS = ("CommandTree-invoker", "discord-ui-view-dispatch-", "discord-ui-modal-dispatch-",
                 "discord-ui-dynamic-item-", "discord.py: on_message")  # fmt: skip


def dm_of(player: Player) -> Where:
    """The DM channel between ``player`` and the bot."""
    return Where(channel_id=830_000_000_000_000_000 + player.id % 1000)


class BotHarness:
    """A logged-in bot, the stand-in it talks to, and the outbox it logs to."""

    def __init__(self, bot: discord.Client, standin: DiscordStandIn, outbox: Outbox) -> None:
        self.bot = bot
        self.standin = standin
        self.outbox = outbox

    @property
    def command_log(self) -> CommandLog:
        """The command log the bot attached in ``setup_hook``."""
        command_log = getattr(self.bot, "command_log", None)
        assert isinstance(command_log, CommandLog), "this bot attached no command log"
        return command_log

    def payload(self, name: str, *options: dict[str, Any], player: Player = ALICE, where: Where = GUILD, **kw: Any) -> dict[str, Any]:
        """An INTERACTION_CREATE payload for this bot's application."""
        return slash(name, *options, player=player, where=where, application_id=self.standin.application_id, **kw)

    async def invoke(
        self, name: str, *options: dict[str, Any], player: Player = ALICE, where: Where = GUILD, **kw: Any
    ) -> list[Exchange]:
        """Run ``/name options...`` and return what the bot sent for it, once it has finished."""
        return await self.send(self.payload(name, *options, player=player, where=where, **kw))

    async def send(self, payload: dict[str, Any], *, answered: bool = True) -> list[Exchange]:
        """Dispatch ``payload``, wait for its response (if ``answered``) and for the command to end."""
        interaction_id = int(payload["id"])
        response = self.standin.expect_response(interaction_id)
        dispatch(self.bot, payload)
        if answered:
            try:
                await asyncio.wait_for(asyncio.shield(response), TIMEOUT)
            except asyncio.TimeoutError:
                raise AssertionError(f"no response to {payload['data'].get('name') or payload['data'].get('custom_id')} within {TIMEOUT} s") from None
        await self.settle()
        self.standin.forget(interaction_id)
        return self.standin.responses_to(interaction_id)

    async def settle(self) -> None:
        """Wait until every command task discord.py started has finished."""
        await asyncio.sleep(0)  # let freshly created tasks start
        tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith(COMMAND_TASKS) and not t.done()]
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=TIMEOUT)
            if pending:
                raise AssertionError(f"{len(pending)} commands still running after {TIMEOUT} s")

    async def rows(self) -> list[dict[str, Any]]:
        """The ``command_calls`` payloads in the outbox, oldest first."""
        return await outbox_rows(self.outbox.path)


async def outbox_rows(path: Path) -> list[dict[str, Any]]:
    """The ``command_calls`` payloads in the outbox at ``path``, oldest first."""
    rows: list[dict[str, Any]] = []
    async with OutboxReader(path) as reader:
        async for chunk in reader.iter_events(topic="command_calls"):
            rows.extend(json.loads(event.payload) for event in chunk)
    return rows


@asynccontextmanager
async def running_bot(
    outbox_path: Path,
    *,
    make_bot: Callable[[Outbox], discord.Client] = lambda ob: LadderBot(outbox=ob),
    **outbox_options: Any,
) -> AsyncIterator[BotHarness]:
    """A fresh bot, logged in to a fresh stand-in, logging to a fresh outbox; all closed after."""
    saved_base = discord.http.Route.BASE
    async with DiscordStandIn(valid_token="test-token") as standin, Outbox(outbox_path, **outbox_options) as ob:
        with pointed_at(standin.base):
            bot = make_bot(ob)
            try:
                await asyncio.wait_for(bot.login("test-token"), TIMEOUT)
                yield BotHarness(bot, standin, ob)
                await BotHarness(bot, standin, ob).settle()
            finally:
                await bot.close()
    assert discord.http.Route.BASE == saved_base
