"""Run the ladder bot on Discord: the outbox, the optional in-process shipper, clean shutdown.

With a DSN the shipper runs as a coroutine beside the bot, woken by each append; without one the
events wait in the outbox for a sidecar (``shipper run``), and a log line says so.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import discord

from outbox import Outbox, OutboxError

from .ladder import LadderBot

if TYPE_CHECKING:
    from shipper import Shipper

__all__ = ["RunConfig", "RunError", "run_bot"]

log = logging.getLogger(__name__)


class RunError(Exception):
    """The bot cannot run; the message is one line saying why and what to do."""


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """How to run the bot.

    Parameters
    ----------
    token:
        The bot's token from the Discord developer portal.
    outbox_path:
        Where commands are logged.
    dsn:
        Postgres to ship to from this process; ``None`` leaves shipping to a sidecar.
    sync:
        Push the command definitions to Discord at start-up.
    """

    token: str
    outbox_path: Path
    dsn: str | None = None
    sync: bool = False


async def run_bot(config: RunConfig) -> None:
    """Run until SIGINT/SIGTERM or a fatal error (raised as :class:`RunError`)."""
    try:
        ob = await Outbox(config.outbox_path).open()
    except OutboxError as exc:
        raise RunError(f"cannot open the outbox: {exc}") from None
    try:
        shipper = await _start_shipper(config, ob)
        try:
            await _serve(config, LadderBot(outbox=ob, sync=config.sync))
        finally:
            if shipper is not None:
                await shipper.stop()
    finally:
        await ob.close()


async def _start_shipper(config: RunConfig, ob: Outbox) -> Shipper | None:
    if not config.dsn:
        log.info(
            "OUTBOX_DSN (or DATABASE_URL) not set: commands stay in %s until a sidecar ships them"
            " (shipper run --outbox %s --dsn ...)",
            config.outbox_path,
            config.outbox_path,
        )
        return None
    from shipper import Shipper, ShipperError

    try:
        shipper = Shipper(config.outbox_path, config.dsn, outbox=ob)
        await shipper.start()
    except (ShipperError, ValueError) as exc:
        raise RunError(f"cannot ship to Postgres: {exc}") from None
    return shipper


async def _serve(config: RunConfig, bot: LadderBot) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: asyncio.ensure_future(bot.close()))
    try:
        async with bot:
            await bot.start(config.token)
    except discord.LoginFailure:
        raise RunError(
            "Discord rejected the token in DISCORD_TOKEN (401 Unauthorized); copy it again from the developer portal"
        ) from None
    except discord.PrivilegedIntentsRequired as exc:
        raise RunError(f"Discord refused the connection: {exc}") from None
    except (aiohttp.ClientError, OSError) as exc:
        raise RunError(f"cannot reach Discord: {exc}") from None
    except discord.HTTPException as exc:
        raise RunError(f"Discord answered {exc.status}: {exc.text or exc}") from None
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
