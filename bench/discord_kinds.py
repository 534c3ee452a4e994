"""What the command log costs per kind of interaction: slash, prefix and component, side by side.

One ``commands.Bot`` logged in to the loopback stand-in, with a slash command, a prefix command
and a persistent view's button, each answering at once. Payloads go to discord.py's own
``INTERACTION_CREATE`` and ``MESSAGE_CREATE`` parsers. Blocks with ``log_commands(bot, outbox)``
attached and detached alternate (ABBA), the collector frozen; *handled* is dispatch to the end of
the task discord.py ran it in (a done callback, added the same way in both modes), and *the hook
alone* is what the log times itself (building the row and ``Outbox.append``).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.payloads import Player, Where, component, dispatch, dispatch_message, message, slash
from bot.standin import DiscordStandIn, pointed_at
from discord_outbox import CommandLog, Outbox

__all__ = ["KINDS", "KindSamples", "measure_kinds"]

KINDS = ("slash", "prefix", "component")
_TASKS = {"slash": "CommandTree-invoker", "prefix": "discord.py: on_message", "component": "discord-ui-view-dispatch-"}
_PLAYER = Player(id=310_000_000_000_000_009, username="bench", global_name="Bench")
_WHERE = Where(guild_id=810_000_000_000_000_109, channel_id=820_000_000_000_000_109)


@dataclass
class KindSamples:
    """Handled latencies (ns) with the log off and on, and the hook's own cost, for one kind."""

    off: list[int] = field(default_factory=list)
    on: list[int] = field(default_factory=list)
    hook: list[int] = field(default_factory=list)


class _Queue(discord.ui.View):
    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Accept", custom_id="accept")
    async def accept(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]) -> None:
        await interaction.response.send_message("accepted", ephemeral=True)


class _BenchBot(commands.Bot):
    def __init__(self) -> None:
        intents = discord.Intents(guilds=True, messages=True, message_content=True)
        super().__init__(command_prefix="!", intents=intents, help_command=None)

        @commands.command()
        async def ping(ctx: commands.Context[Any]) -> None:
            await ctx.send("pong")

        @app_commands.command(description="ping")
        async def pong(interaction: discord.Interaction[Any]) -> None:
            await interaction.response.send_message("pong")

        self.add_command(ping)
        self.tree.add_command(pong)

    async def setup_hook(self) -> None:
        self.add_view(_Queue())


def _payloads(standin: DiscordStandIn) -> dict[str, Callable[[], tuple[Callable[[Any, dict[str, Any]], None], dict[str, Any]]]]:
    app = standin.application_id
    buttons = [{"type": 1, "components": [{"type": 2, "style": 1, "label": "Accept", "custom_id": "accept"}]}]
    carrier = message("Queue", author=standin.bot_user, where=_WHERE, components=buttons)
    member = {**_PLAYER.member(), "user": _PLAYER.user()}
    return {
        "slash": lambda: (dispatch, slash("pong", player=_PLAYER, where=_WHERE, application_id=app)),
        "prefix": lambda: (dispatch_message, message("!ping", author=_PLAYER.user(), where=_WHERE, member=member)),
        "component": lambda: (dispatch, component("accept", player=_PLAYER, where=_WHERE, application_id=app, message=carrier)),
    }


async def _one(bot: commands.Bot, kind: str, make: Callable[[], tuple[Any, dict[str, Any]]]) -> int:
    """Dispatch one interaction of ``kind``; return ns from dispatch to the end of its task."""
    send, payload = make()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[int] = loop.create_future()
    before = asyncio.all_tasks()
    start = time.perf_counter_ns()
    send(bot, payload)
    prefix = _TASKS[kind]
    tasks = [t for t in asyncio.all_tasks() - before if t.get_name().startswith(prefix)]
    if len(tasks) != 1:
        raise RuntimeError(f"a {kind} dispatch started {len(tasks)} tasks named {prefix!r}, not one")
    tasks[0].add_done_callback(lambda _: done.done() or done.set_result(time.perf_counter_ns()))
    return await asyncio.wait_for(done, 10) - start


async def measure_kinds(path: Path, *, per_kind: int, block: int = 50, warmup: int = 100) -> dict[str, KindSamples]:
    """Run ``per_kind`` of each kind with the log on and as many off, in ABBA blocks."""
    samples = {kind: KindSamples() for kind in KINDS}
    async with DiscordStandIn() as standin, Outbox(path) as ob:
        with pointed_at(standin.base):
            bot = _BenchBot()
            try:
                await bot.login("bench-token")
                makers = _payloads(standin)
                for kind in KINDS:
                    for _ in range(warmup):
                        await _one(bot, kind, makers[kind])
                gc.collect()
                gc.freeze()
                try:
                    for pair in range(-(-per_kind // block)):
                        for logging_on in (True, False) if pair % 2 == 0 else (False, True):
                            log = CommandLog(ob).attach(bot) if logging_on else None
                            if log is not None:
                                log.timings = []
                            try:
                                for kind in KINDS:
                                    s = samples[kind]
                                    for _ in range(block):
                                        (s.on if logging_on else s.off).append(await _one(bot, kind, makers[kind]))
                                    if log is not None and log.timings is not None:
                                        s.hook.extend(log.timings)
                                        log.timings.clear()
                            finally:
                                if log is not None:
                                    log.detach()
                finally:
                    gc.unfreeze()
            finally:
                await bot.close()
    return samples
