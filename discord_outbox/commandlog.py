"""Log every application command a discord.py ``CommandTree`` runs, with no code per command.

One line in any discord.py 2.x bot, typically in ``setup_hook``::

    log_commands(self.tree, outbox)

Each slash command (and context menu) then becomes one ``command_calls`` event in the outbox:
who ran it, the qualified name (``queue join``), its options (resolved objects reduced to ids),
where, the outcome and how long the command took.

How: the tree's ``_call`` coroutine, the single place through which discord.py 2.0 to 2.7 runs an
application command (check, callback, error handlers), is wrapped on that tree instance only. It
is the one point that sees a command start, end and fail, whatever tree subclass or error
handlers the bot has; the public hooks miss cases (``interaction_check`` returning False fires
neither completion nor ``on_error``) and ``on_app_command_completion`` arrives a task later. The
error a command raised is read as it passes through ``tree.on_error``, which is tapped the same
way (and re-tapped if the bot replaces it later with ``@tree.error``).

The event is appended after the command has answered, on the command's own task: the reply is
never delayed, and the append itself is one SQLite insert (tens of microseconds). If the outbox
fails (full, closed, disk error) the command is unaffected and the failure is logged at ERROR,
at most once per ``error_interval_s`` with a count of the ones not shown.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import discord
from discord import app_commands

from outbox import Outbox, OutboxError

__all__ = ["CommandLog", "CommandLogStats", "log_commands", "outcome_of", "command_and_options", "TOPIC"]

log = logging.getLogger(__name__)

TOPIC = "command_calls"
_SUBCOMMAND_TYPES = (1, 2)
_ID_TYPES = (6, 7, 8, 9, 11)  # user, channel, role, mentionable, attachment: value is the id
_UNKNOWN_INTERACTION = 10062  # Discord's code when an interaction was answered too late


@dataclass(frozen=True, kw_only=True)
class CommandLogStats:
    """Counts since the log was created."""

    logged: int
    failed: int
    last_error: str | None


class _Call:
    """The command running on this task: where the error tap leaves what it saw."""

    __slots__ = ("interaction", "error")

    def __init__(self, interaction: discord.Interaction[Any]) -> None:
        self.interaction = interaction
        self.error: BaseException | None = None


_current: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("command_log_call", default=None)


class CommandLog:
    """Append one event per application command run by a tree to an outbox.

    Parameters
    ----------
    outbox:
        An open :class:`outbox.Outbox`. The log never opens or closes it.
    topic:
        The event topic; ``command_calls`` lands in Postgres table ``command_calls``.
    error_interval_s:
        When appends keep failing, log at most one ERROR line per interval.
    """

    def __init__(self, outbox: Outbox, *, topic: str = TOPIC, error_interval_s: float = 60.0) -> None:
        self.outbox = outbox
        self.topic = topic
        self.error_interval_s = error_interval_s
        self.timings: list[int] | None = None  # set to a list to collect each hook's own cost (ns)
        self._tree: app_commands.CommandTree[Any] | None = None
        self._logged = 0
        self._failed = 0
        self._unreported = 0
        self._last_report = -math.inf
        self._last_error: str | None = None

    @property
    def stats(self) -> CommandLogStats:
        """How many commands were logged and how many could not be."""
        return CommandLogStats(logged=self._logged, failed=self._failed, last_error=self._last_error)

    @property
    def attached(self) -> bool:
        """True while the log is attached to a tree."""
        return self._tree is not None

    def attach(self, tree: app_commands.CommandTree[Any]) -> CommandLog:
        """Start logging every application command ``tree`` runs; return self."""
        if self._tree is not None:
            raise RuntimeError("this CommandLog is already attached to a tree; detach it first")
        inner = getattr(tree, "_call", None)
        if not callable(inner):
            raise TypeError(
                f"{type(tree).__name__} has no _call coroutine; CommandLog supports discord.py 2.0 to 2.7"
            )
        if isinstance(inner, _CallWrapper):
            raise RuntimeError("this tree already has a CommandLog attached")
        setattr(tree, "_call", _CallWrapper(self, tree, inner))
        self._tree = tree
        self._tap_errors(tree)
        return self

    def detach(self) -> None:
        """Stop logging; the tree runs commands exactly as before :meth:`attach`."""
        tree, self._tree = self._tree, None
        if tree is None:
            return
        call = vars(tree).get("_call")
        if isinstance(call, _CallWrapper) and call.log is self:
            _restore(tree, "_call", call.inner)
        else:
            log.warning("CommandLog.detach: %r wrapped again since attach; leaving its _call in place", tree)
        tap = vars(tree).get("on_error")
        if isinstance(tap, _ErrorTap) and tap.log is self:
            _restore(tree, "on_error", tap.inner)

    def _tap_errors(self, tree: app_commands.CommandTree[Any]) -> None:
        current = tree.on_error
        if not (isinstance(current, _ErrorTap) and current.log is self):
            setattr(tree, "on_error", _ErrorTap(self, current))

    async def record(self, interaction: discord.Interaction[Any], error: BaseException | None, elapsed_ns: int) -> None:
        """Append the event for one finished command; never raises (failures are logged)."""
        start = time.perf_counter_ns()
        name = "?"
        try:
            name, options = command_and_options(interaction.data or {})
            user = interaction.user
            payload = {
                "discord_uid": user.id,
                "player_name": _clean(user.display_name),
                "command": name,
                "options": options,
                "guild_id": interaction.guild_id,
                "channel_id": interaction.channel_id,
                "outcome": outcome_of(interaction, error),
                "latency_ms": round(elapsed_ns / 1e6, 3),
            }
            await self.outbox.append(self.topic, payload)
        except Exception as exc:  # noqa: BLE001 - logging must never break a command
            self._failed += 1
            self._report(exc, name)
        else:
            self._logged += 1
        if self.timings is not None:
            self.timings.append(time.perf_counter_ns() - start)

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


class _CallWrapper:
    """Stands in for ``tree._call``: run the command, time it, then record it."""

    __slots__ = ("log", "tree", "inner")

    def __init__(self, log: CommandLog, tree: app_commands.CommandTree[Any], inner: Any) -> None:
        self.log = log
        self.tree = tree
        self.inner = inner

    async def __call__(self, interaction: discord.Interaction[Any]) -> None:
        if interaction.type is not discord.InteractionType.application_command:
            await self.inner(interaction)  # autocomplete: not a command run
            return
        self.log._tap_errors(self.tree)
        call = _Call(interaction)
        token = _current.set(call)
        start = time.perf_counter_ns()
        escaped: BaseException | None = None
        try:
            await self.inner(interaction)
        except BaseException as exc:
            escaped = exc  # CommandNotFound, signature mismatch: on_error runs after us
            raise
        finally:
            elapsed = time.perf_counter_ns() - start
            _current.reset(token)
            await self.log.record(interaction, call.error or escaped, elapsed)


class _ErrorTap:
    """Stands in for ``tree.on_error``: note the error for the running command, then pass it on."""

    __slots__ = ("log", "inner")

    def __init__(self, log: CommandLog, inner: Any) -> None:
        self.log = log
        self.inner = inner

    async def __call__(self, interaction: discord.Interaction[Any], error: app_commands.AppCommandError, /) -> None:
        call = _current.get()
        if call is not None and call.interaction is interaction and call.error is None:
            call.error = error
        await self.inner(interaction, error)


def log_commands(
    tree: app_commands.CommandTree[Any], outbox: Outbox, *, topic: str = TOPIC, error_interval_s: float = 60.0
) -> CommandLog:
    """Log every application command ``tree`` runs to ``outbox``; return the attached log."""
    return CommandLog(outbox, topic=topic, error_interval_s=error_interval_s).attach(tree)


def outcome_of(interaction: discord.Interaction[Any], error: BaseException | None) -> str:
    """Name how a command ended: ``ok``, ``check_failure``, ``command_error``, ``timeout``, ..."""
    if error is None:
        # interaction_check returned False: neither completion nor on_error fires
        return "check_failure" if interaction.command_failed else "ok"
    if isinstance(error, app_commands.CommandInvokeError):
        original = error.original
        if isinstance(original, (TimeoutError, asyncio.TimeoutError)):
            return "timeout"
        if isinstance(original, discord.NotFound) and original.code == _UNKNOWN_INTERACTION:
            return "timeout"  # answered after Discord's 3 s deadline
        return "command_error"
    if isinstance(error, app_commands.CheckFailure):
        return "check_failure"
    if isinstance(error, app_commands.TransformerError):
        return "transform_error"
    if isinstance(error, app_commands.CommandNotFound):
        return "not_found"
    if isinstance(error, app_commands.CommandSignatureMismatch):
        return "signature_mismatch"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    if isinstance(error, app_commands.AppCommandError):
        return "command_error"  # raised by the callback itself
    return "error"


def command_and_options(data: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return the qualified command name and its options (ids for resolved objects).

    Read from the interaction's data rather than ``interaction.namespace``: it is there even
    when the command was never found or a check ran before the namespace was built.
    """
    parts = [str(data.get("name", "?"))]
    options: Sequence[Mapping[str, Any]] = data.get("options") or ()
    while options and options[0].get("type") in _SUBCOMMAND_TYPES:
        parts.append(str(options[0].get("name", "?")))
        options = options[0].get("options") or ()
    values: dict[str, Any] = {}
    for opt in options:
        value = opt.get("value")
        if opt.get("type") in _ID_TYPES and isinstance(value, (str, int)) and str(value).isdigit():
            value = int(value)
        elif isinstance(value, str):
            value = _clean(value)
        elif isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        values[_clean(str(opt.get("name", "?")))] = value
    target = data.get("target_id")  # context menus: the user or message acted on
    if target is not None and str(target).isdigit():
        values["target"] = int(target)
    return " ".join(parts), values


def _clean(text: str) -> str:
    """Make user-typed text storable in Postgres jsonb: no NUL, no lone surrogate."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text


def _restore(tree: app_commands.CommandTree[Any], name: str, inner: Any) -> None:
    """Put back what ``name`` was: the class's method (drop the instance attribute) or ``inner``."""
    if getattr(inner, "__self__", None) is tree and getattr(inner, "__func__", None) is getattr(type(tree), name, None):
        delattr(tree, name)
    else:
        setattr(tree, name, inner)
