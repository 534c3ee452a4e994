"""Log every interaction a user has with a discord.py bot, with no code per command.

One line in any discord.py bot (2.3 or later, below 3), typically in ``setup_hook``::

    log_commands(self, outbox)        # the client: everything below
    log_commands(self.tree, outbox)   # or only a tree's application commands

Each slash command, context menu, prefix or hybrid command (on a ``commands.Bot``), button or
select press and modal submission then becomes one ``command_calls`` event in the outbox: who,
what (the qualified name, or the ``custom_id`` of a component or modal), its ``kind``
(``slash|user|message|prefix|component|modal``), its options, where, the bot's
``application_id``, the outcome (``ok``, ``check_failure``, ``command_error``, ``timeout``,
``no_response``, ``interrupted``, ...) and how long it took. Where discord.py is tapped, and why
there, is in :mod:`discord_outbox.taps`.

The event is appended after the interaction has been answered, on its own task: the reply is never
delayed, and the append itself is one SQLite insert (tens of microseconds). If the outbox fails
(full, closed, disk error) the command is unaffected and the failure is logged at ERROR, at most
once per ``error_interval_s`` with a count of the ones not shown.

At shutdown nothing is lost: ``client.close()`` first waits up to ``shutdown_grace_s`` for the
commands still running, then logs the rest ``interrupted``, so a bot that closes its outbox after
``bot.close()`` (as ``async with bot`` then ``async with outbox`` does) keeps every row.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from outbox import Outbox, OutboxError

from . import taps
from .describe import app_kind, clean, command_and_options, component_and_options, context_and_options, outcome_of
from .taps import Call

__all__ = ["CommandLog", "CommandLogStats", "log_commands", "outcome_of", "command_and_options", "TOPIC", "SUPPORTED"]

log = logging.getLogger(__name__)

TOPIC = "command_calls"
SUPPORTED = "discord.py 2.3 or later (below 3)"


@dataclass(frozen=True, kw_only=True)
class CommandLogStats:
    """Counts since the log was created."""

    logged: int
    failed: int
    last_error: str | None
    interrupted: int = 0
    running: int = 0


class CommandLog:
    """Append one event per command, component or modal interaction a bot runs to an outbox.

    Parameters
    ----------
    outbox:
        An open :class:`outbox.Outbox`. The log never opens or closes it.
    topic:
        The event topic; ``command_calls`` lands in Postgres table ``command_calls``.
    error_interval_s:
        When appends keep failing, log at most one ERROR line per interval.
    custom_id_key:
        Turns a component's or modal's ``custom_id`` into the ``command`` logged, for dynamic ids
        (``lambda cid: cid.split(":")[0]`` logs ``accept:12345`` as ``accept``; the raw id stays
        in the options). ``None`` logs the id as it is.
    shutdown_grace_s:
        How long ``client.close()`` lets running commands finish before logging them ``interrupted``.
    """

    def __init__(
        self,
        outbox: Outbox,
        *,
        topic: str = TOPIC,
        error_interval_s: float = 60.0,
        custom_id_key: Callable[[str], str] | None = None,
        shutdown_grace_s: float = 2.0,
    ) -> None:
        self.outbox = outbox
        self.topic = topic
        self.error_interval_s = error_interval_s
        self.custom_id_key = custom_id_key
        self.shutdown_grace_s = shutdown_grace_s
        self.timings: list[int] | None = None  # set to a list to collect each hook's own cost (ns)
        self._tree: app_commands.CommandTree[Any] | None = None
        self._client: discord.Client | None = None
        self._bot: commands.Bot | None = None  # listening for on_command_error
        self._running: dict[Call, None] = {}
        self._changed: asyncio.Event | None = None  # set while shutdown waits
        self._logged = 0
        self._failed = 0
        self._interrupted = 0
        self._unreported = 0
        self._last_report = -math.inf
        self._last_error: str | None = None

    @property
    def stats(self) -> CommandLogStats:
        """How many calls were logged, could not be, were interrupted, and are running now."""
        return CommandLogStats(
            logged=self._logged,
            failed=self._failed,
            last_error=self._last_error,
            interrupted=self._interrupted,
            running=len(self._running),
        )

    @property
    def attached(self) -> bool:
        """True while the log is attached to a tree or a client."""
        return self._tree is not None or self._client is not None

    def attach(self, target: discord.Client | app_commands.CommandTree[Any]) -> CommandLog:
        """Start logging what ``target`` runs; return self.

        A tree: its application commands. A client (``discord.Client``, ``commands.Bot``,
        ``AutoShardedBot``): its tree's commands, its prefix and hybrid commands (a ``Bot``), and
        its component and modal interactions.
        """
        if self.attached:
            raise RuntimeError("this CommandLog is already attached; detach it first")
        if not (2, 3) <= tuple(discord.version_info[:2]) < (3, 0):
            raise RuntimeError(f"log_commands supports {SUPPORTED}; this is discord.py {discord.__version__}")
        if isinstance(target, app_commands.CommandTree):
            tree: app_commands.CommandTree[Any] | None = target
            client = target.client
        elif isinstance(target, discord.Client):
            client = target
            tree = getattr(client._connection, "_command_tree", None)
        else:
            raise TypeError(f"log_commands needs a discord.py CommandTree or Client ({SUPPORTED}), not {type(target).__name__}")
        if client is target and client in taps.ui_logs:
            raise RuntimeError("this client already has a CommandLog attached")
        if tree is not None:
            self._attach_tree(tree)
        if isinstance(client, commands.Bot):
            client.add_listener(self._on_command_error, "on_command_error")
            self._bot = client
        if client is target:
            if isinstance(client, commands.Bot):
                setattr(client, "invoke", taps.InvokeWrapper(self, client.invoke))
            taps.patch_ui()
            taps.ui_logs[client] = self
        if not isinstance(vars(client).get("close"), taps.CloseHook):
            setattr(client, "close", taps.CloseHook(self, client.close))
        self._client = client
        return self

    def _attach_tree(self, tree: app_commands.CommandTree[Any]) -> None:
        inner = getattr(tree, "_call", None)
        if not callable(inner):
            raise TypeError(f"{type(tree).__name__} has no _call coroutine; CommandLog supports {SUPPORTED}")
        if isinstance(inner, taps.CallWrapper):
            raise RuntimeError("this tree already has a CommandLog attached")
        setattr(tree, "_call", taps.CallWrapper(self, tree, inner))
        self._tree = tree
        self._tap_errors(tree)

    def detach(self) -> None:
        """Stop logging; the tree and client run exactly as before :meth:`attach`."""
        tree, self._tree = self._tree, None
        client, self._client = self._client, None
        if tree is not None:
            call = vars(tree).get("_call")
            if isinstance(call, taps.CallWrapper) and call.log is self:
                taps.restore(tree, "_call", call.inner)
            else:
                log.warning("CommandLog.detach: %r wrapped again since attach; leaving its _call in place", tree)
            tap = vars(tree).get("on_error")
            if isinstance(tap, taps.ErrorTap) and tap.log is self:
                taps.restore(tree, "on_error", tap.inner)
        if client is None:
            return
        for name, kind in (("close", taps.CloseHook), ("invoke", taps.InvokeWrapper)):
            hook = vars(client).get(name)
            if isinstance(hook, kind) and hook.log is self:
                taps.restore(client, name, hook.inner)
        if taps.ui_logs.get(client) is self:
            del taps.ui_logs[client]
        if self._bot is not None:
            self._bot.remove_listener(self._on_command_error, "on_command_error")
            self._bot = None

    def _tap_errors(self, tree: app_commands.CommandTree[Any]) -> None:
        current = tree.on_error
        if not (isinstance(current, taps.ErrorTap) and current.log is self):
            setattr(tree, "on_error", taps.ErrorTap(self, current))

    async def _on_command_error(self, ctx: commands.Context[Any], error: commands.CommandError) -> None:
        # A task of its own, created on the failing call's task: it inherits that call.
        call = taps.current.get()
        if call is not None and call.error is None and call.matches(ctx):
            call.error = error

    async def _run(self, call: Call, coro: Coroutine[Any, Any, Any]) -> None:
        """Run one call's coroutine on this task, then record it."""
        token = self._begin(call)
        try:
            await coro
        except BaseException as exc:
            if call.error is None:
                call.error = exc
            raise
        finally:
            await self._end(call, token)

    def _begin(self, call: Call) -> contextvars.Token[Call | None]:
        """Note ``call`` as running on this task (the hot path inlines :meth:`_run` around these)."""
        self._running[call] = None
        return taps.current.set(call)

    async def _end(self, call: Call, token: contextvars.Token[Call | None]) -> None:
        """Record ``call``, which has just ended on this task."""
        taps.current.reset(token)
        if call.error is None and self._bot is not None and call.failed():
            await asyncio.sleep(0)  # on_command_error's listener task, already scheduled, runs first
        try:
            await self._record(call)
        finally:
            self._running.pop(call, None)
            if self._changed is not None:
                self._changed.set()

    async def shutdown(self, grace_s: float | None = None) -> int:
        """Let running calls finish for up to ``grace_s``, then log the rest ``interrupted``.

        Called by ``client.close()`` once attached; returns how many were interrupted. The calls
        themselves are left running: if they finish later, they are not logged a second time.
        """
        me = taps.current.get()  # a command that closes the bot does not wait for itself
        deadline = time.monotonic() + (self.shutdown_grace_s if grace_s is None else grace_s)
        self._changed = changed = asyncio.Event()
        try:
            while any(c is not me for c in self._running) and (left := deadline - time.monotonic()) > 0:
                changed.clear()
                try:
                    await asyncio.wait_for(changed.wait(), left)
                except asyncio.TimeoutError:
                    break
        finally:
            self._changed = None
        stuck = [c for c in self._running if c is not me and not c.recorded]
        for call in stuck:
            await self._record(call, outcome="interrupted")
        self._interrupted += len(stuck)
        if stuck:
            log.warning("%d commands still running at shutdown were logged as interrupted", len(stuck))
        return len(stuck)

    async def record(self, interaction: discord.Interaction[Any], error: BaseException | None, elapsed_ns: int) -> None:
        """Append the event for one finished application command; never raises (failures are logged)."""
        call = Call("app", interaction)
        call.error = error
        call.start_ns = time.perf_counter_ns() - elapsed_ns
        await self._record(call)

    async def _record(self, call: Call, *, outcome: str | None = None) -> None:
        if call.recorded:
            return
        call.recorded = True
        start = time.perf_counter_ns()
        name = "?"
        try:
            name, payload = self._payload(call, outcome, start - call.start_ns)
            await self.outbox.append(self.topic, payload)
        except Exception as exc:  # noqa: BLE001 - logging must never break a command
            self._failed += 1
            self._report(exc, name)
        else:
            self._logged += 1
        if self.timings is not None:
            self.timings.append(time.perf_counter_ns() - start)

    def _payload(self, call: Call, outcome: str | None, elapsed_ns: int) -> tuple[str, dict[str, Any]]:
        interaction, ctx = call.interaction, call.ctx
        if ctx is not None:
            name, options = context_and_options(ctx)
            user: discord.abc.User = ctx.author
            guild = ctx.guild
            guild_id = guild.id if guild is not None else getattr(ctx.channel, "guild_id", None)
            channel_id: int | None = ctx.channel.id
            application_id = ctx.bot.application_id
            kind = "prefix"
        else:
            assert interaction is not None
            data: Any = interaction.data or {}
            if call.kind == "app":
                name, options = command_and_options(data)
                kind = app_kind(data)
            else:
                name, options = component_and_options(data, self.custom_id_key)
                kind = call.kind
            user = interaction.user
            guild_id, channel_id, application_id = interaction.guild_id, interaction.channel_id, interaction.application_id
        return name, {
            "discord_uid": user.id,
            "player_name": clean(user.display_name),
            "command": name,
            "kind": kind,
            "options": options,
            "guild_id": guild_id,
            "channel_id": channel_id,
            "application_id": application_id,
            "outcome": outcome or outcome_of(interaction, call.error, kind=kind, refused=call.refused),
            "latency_ms": round(elapsed_ns / 1e6, 3),
        }

    def _report(self, exc: Exception, command: str) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        now = time.monotonic()
        if now - self._last_report < self.error_interval_s:
            self._unreported += 1
            return
        self._last_report = now
        more = f" ({self._unreported} more failures since the last report)" if self._unreported else ""
        self._unreported = 0
        if isinstance(exc, OutboxError):
            log.error("command /%s answered but was not logged: %s%s", command, exc, more)
        else:
            log.error("command /%s answered but was not logged: bug in the command log%s", command, more, exc_info=exc)


def log_commands(
    bot_or_tree: discord.Client | app_commands.CommandTree[Any],
    outbox: Outbox,
    *,
    topic: str = TOPIC,
    error_interval_s: float = 60.0,
    custom_id_key: Callable[[str], str] | None = None,
    shutdown_grace_s: float = 2.0,
) -> CommandLog:
    """Log every interaction ``bot_or_tree`` runs to ``outbox``; return the attached log.

    Given the client, everything: application commands, prefix and hybrid commands of a
    ``commands.Bot``, buttons, selects and modals. Given a tree, its application commands.
    """
    return CommandLog(
        outbox,
        topic=topic,
        error_interval_s=error_interval_s,
        custom_id_key=custom_id_key,
        shutdown_grace_s=shutdown_grace_s,
    ).attach(bot_or_tree)
