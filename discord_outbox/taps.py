"""Where the command log taps discord.py: the one place each kind of interaction passes through.

- Application commands: the tree's ``_call`` coroutine, the single place through which
  discord.py 2.3 to 2.7 runs one (check, callback, error handlers), wrapped on that tree instance;
  its errors are read as they pass through ``tree.on_error``, tapped the same way.
- Prefix (and hybrid, typed with the prefix) commands: ``Bot.invoke``, wrapped on the bot instance.
  Their errors, and a hybrid command's run as a slash command, go to ``on_command_error``: a
  listener notes them for the call running on that task.
- Buttons, selects and modals: ``_scheduled_task`` of discord.py's views and modals, the task
  each component interaction or modal submission runs in. These are patched once on the classes
  (views are made per message, there is no instance to wrap beforehand); the patch passes
  straight through unless the interaction's client has a log attached. A view's ``on_error`` and
  ``interaction_check`` are tapped on the instance, since bots override them per view.
- Shutdown: ``client.close``, wrapped on the instance, first gives the commands still running a
  short grace and logs the rest ``interrupted``, while the outbox is still open.

Errors are matched to their call through a context variable: each call sets it on its own task,
and the tasks discord.py creates from there (event listeners) inherit it.
"""

from __future__ import annotations

import contextvars
import time
import weakref
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

if TYPE_CHECKING:
    from .commandlog import CommandLog

__all__ = ["Call", "current", "CallWrapper", "ErrorTap", "CheckTap", "InvokeWrapper", "CloseHook", "ui_logs", "patch_ui", "restore"]


class Call:
    """One command, button press or modal submission being run, and what is known of it so far."""

    __slots__ = ("kind", "interaction", "ctx", "error", "start_ns", "recorded", "refused")

    def __init__(
        self, kind: str, interaction: discord.Interaction[Any] | None = None, ctx: commands.Context[Any] | None = None
    ) -> None:
        self.kind = kind  # "app" until the data says slash/user/message
        self.interaction = interaction
        self.ctx = ctx
        self.error: BaseException | None = None
        self.start_ns = time.perf_counter_ns()
        self.recorded = False
        self.refused = False  # a view's or modal's interaction_check said no

    def failed(self) -> bool:
        """discord.py marked the call failed (an error may still be on its way to a listener)."""
        if self.ctx is not None:  # an unknown command is reported without command_failed
            return self.ctx.command is None or bool(self.ctx.command_failed)
        return self.interaction is not None and bool(self.interaction.command_failed)

    def matches(self, ctx: commands.Context[Any]) -> bool:
        """``ctx`` is this call's: the prefix context itself, or a hybrid's around our interaction."""
        return self.ctx is ctx or (self.interaction is not None and ctx.interaction is self.interaction)


current: contextvars.ContextVar[Call | None] = contextvars.ContextVar("command_log_call", default=None)


class CallWrapper:
    """Stands in for ``tree._call``: run the application command inside a logged call."""

    __slots__ = ("log", "tree", "inner")

    def __init__(self, log: CommandLog, tree: app_commands.CommandTree[Any], inner: Any) -> None:
        self.log = log
        self.tree = tree
        self.inner = inner

    async def __call__(self, interaction: discord.Interaction[Any]) -> None:
        if interaction.type is not discord.InteractionType.application_command:
            await self.inner(interaction)  # autocomplete: not a command run
            return
        log = self.log
        log._tap_errors(self.tree)
        call = Call("app", interaction)
        token = log._begin(call)  # CommandLog._run, inlined: one coroutine frame less on every resume
        try:
            await self.inner(interaction)
        except BaseException as exc:
            if call.error is None:
                call.error = exc  # CommandNotFound, signature mismatch: on_error runs after us
            raise
        finally:
            await log._end(call, token)


class ErrorTap:
    """Stands in for an ``on_error``: note the error for the running call, then pass it on.

    The same tap serves a tree (``interaction, error``), a view (``..., item``) and a modal.
    """

    __slots__ = ("log", "inner")

    def __init__(self, log: CommandLog | None, inner: Any) -> None:
        self.log = log
        self.inner = inner

    async def __call__(self, interaction: discord.Interaction[Any], error: Exception, /, *rest: Any) -> None:
        call = current.get()
        if call is not None and call.interaction is interaction and call.error is None:
            call.error = error
        await self.inner(interaction, error, *rest)


class CheckTap:
    """Stands in for a view's or modal's ``interaction_check``: note a refusal for the running call.

    discord.py then returns without calling the callback, and tells no one.
    """

    __slots__ = ("inner",)

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def __call__(self, interaction: discord.Interaction[Any], /) -> bool:
        allowed = bool(await self.inner(interaction))
        call = current.get()
        if not allowed and call is not None and call.interaction is interaction:
            call.refused = True
        return allowed


class InvokeWrapper:
    """Stands in for ``Bot.invoke``: run a prefix invocation inside a logged call."""

    __slots__ = ("log", "inner")

    def __init__(self, log: CommandLog, inner: Any) -> None:
        self.log = log
        self.inner = inner

    async def __call__(self, ctx: commands.Context[Any], /) -> None:
        if ctx.interaction is not None or (ctx.command is None and not ctx.invoked_with):
            await self.inner(ctx)  # not a prefix invocation: a plain message, or a bot's own call
            return
        await self.log._run(Call("prefix", ctx=ctx), self.inner(ctx))


class CloseHook:
    """Stands in for ``client.close``: log what is still running, then close the client."""

    __slots__ = ("log", "inner")

    def __init__(self, log: CommandLog, inner: Any) -> None:
        self.log = log
        self.inner = inner

    async def __call__(self) -> None:
        await self.log.shutdown()
        await self.inner()


# -- views and modals -------------------------------------------------------------------------

ui_logs: weakref.WeakKeyDictionary[Any, CommandLog] = weakref.WeakKeyDictionary()  # client -> log


def _ui_task(inner: Any, kind: str, pos: int) -> Any:
    async def _scheduled_task(self: Any, *args: Any) -> Any:
        interaction = args[pos]
        log = ui_logs.get(interaction.client) if ui_logs else None
        if log is None:
            return await inner(self, *args)
        tap = getattr(self, "on_error", None)
        if tap is not None and not isinstance(tap, ErrorTap):
            setattr(self, "on_error", ErrorTap(None, tap))  # inert outside a logged call
        check = getattr(self, "interaction_check", None)
        if check is not None and not isinstance(check, CheckTap):
            setattr(self, "interaction_check", CheckTap(check))
        await log._run(Call(kind, interaction), inner(self, *args))
        return None

    _scheduled_task.__wrapped__ = inner  # type: ignore[attr-defined]
    return _scheduled_task


def patch_ui() -> None:
    """Route every view's and modal's interaction task through :data:`ui_logs`; idempotent."""
    for base, name, kind, pos in (
        (discord.ui.View, "_scheduled_task", "component", 1),  # (item, interaction)
        (discord.ui.Modal, "_scheduled_task", "modal", 0),  # (interaction, components, ...)
        (discord.ui.view.ViewStore, "schedule_dynamic_item_call", "component", 2),  # 2.4+: DynamicItem
    ):
        owner = next((c for c in base.__mro__ if name in vars(c)), None)
        if owner is None:
            continue
        inner = vars(owner)[name]
        if getattr(inner, "__wrapped__", None) is None:
            setattr(owner, name, _ui_task(inner, kind, pos))


def restore(target: Any, name: str, inner: Any) -> None:
    """Put back what ``name`` was: the class's method (drop the instance attribute) or ``inner``."""
    func = getattr(type(target), name, None)
    if getattr(inner, "__self__", None) is target and getattr(inner, "__func__", None) is func:
        delattr(target, name)
    else:
        setattr(target, name, inner)
