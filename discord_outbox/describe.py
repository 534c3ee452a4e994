"""What one ``command_calls`` row says: who, which command, what kind, its options, how it ended.

Pure functions of what discord.py hands over (an ``Interaction`` or a prefix ``Context``), kept
apart from the hooks that catch them so that each can be read, and tested, on its own. Every
string a user typed is made storable in Postgres ``jsonb`` here (no NUL, no lone surrogate).
"""

from __future__ import annotations

import asyncio
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

__all__ = [
    "KINDS",
    "command_and_options",
    "component_and_options",
    "context_and_options",
    "outcome_of",
    "outcome_of_error",
    "clean",
]

KINDS = ("slash", "user", "message", "prefix", "component", "modal")
_APP_KINDS = {1: "slash", 2: "user", 3: "message"}  # application command types
_SUBCOMMAND_TYPES = (1, 2)
_ID_TYPES = (6, 7, 8, 9, 11)  # user, channel, role, mentionable, attachment: value is the id
_UNKNOWN_INTERACTION = 10062  # Discord's code when an interaction was answered too late
_REFUSED = (
    app_commands.CheckFailure,
    commands.CheckFailure,
    commands.CommandOnCooldown,
    commands.MaxConcurrencyReached,
    commands.DisabledCommand,
)


def app_kind(data: Mapping[str, Any]) -> str:
    """``slash``, ``user`` or ``message`` (a context menu), from an application command's data."""
    return _APP_KINDS.get(data.get("type", 1), "slash")


def outcome_of(
    interaction: discord.Interaction[Any] | None,
    error: BaseException | None,
    *,
    kind: str = "slash",
    refused: bool = False,
) -> str:
    """Name how a command ended: ``ok``, ``check_failure``, ``command_error``, ``no_response``, ...

    ``interaction`` is None for a prefix command, which has no interaction to answer;
    ``refused`` when a view's or modal's ``interaction_check`` said no.
    """
    if error is not None:
        return outcome_of_error(error, kind=kind)
    if interaction is None:
        return "ok"
    if refused or interaction.command_failed:
        return "check_failure"  # interaction_check returned False: neither completion nor on_error fires
    if not interaction.response.is_done():
        return "no_response"  # the user sees "The application did not respond"
    return "ok"


def outcome_of_error(error: BaseException, *, kind: str = "slash") -> str:
    """Name the outcome an error stands for; the same for a slash, hybrid or prefix invocation."""
    if isinstance(error, commands.HybridCommandError):
        error = error.original  # a hybrid command run as a slash command: the app command error inside
    if isinstance(error, (app_commands.CommandInvokeError, commands.CommandInvokeError)):
        return _raised(error.original)
    if isinstance(error, _REFUSED):
        return "check_failure"
    if isinstance(error, (app_commands.TransformerError, commands.UserInputError)):
        return "transform_error"
    if isinstance(error, (app_commands.CommandNotFound, commands.CommandNotFound)):
        return "not_found"
    if isinstance(error, app_commands.CommandSignatureMismatch):
        return "signature_mismatch"
    if isinstance(error, asyncio.CancelledError):
        return "cancelled"
    if isinstance(error, (app_commands.AppCommandError, commands.CommandError)):
        return "command_error"  # raised by the callback itself
    if kind in ("component", "modal"):
        return _raised(error)  # a view's or modal's on_error gets what the callback raised, unwrapped
    return "error"


def _raised(original: BaseException) -> str:
    if isinstance(original, (TimeoutError, asyncio.TimeoutError)):
        return "timeout"
    if isinstance(original, discord.NotFound) and original.code == _UNKNOWN_INTERACTION:
        return "timeout"  # answered after Discord's 3 s deadline
    return "command_error"


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
            value = clean(value)
        elif isinstance(value, float) and not math.isfinite(value):
            value = str(value)
        values[clean(str(opt.get("name", "?")))] = value
    target = data.get("target_id")  # context menus: the user or message acted on
    if target is not None and str(target).isdigit():
        values["target"] = int(target)
    return " ".join(parts), values


def component_and_options(
    data: Mapping[str, Any], custom_id_key: Callable[[str], str] | None = None
) -> tuple[str, dict[str, Any]]:
    """Return the (normalised) ``custom_id`` of a component or modal and what the user chose.

    A select's ``values``; a modal's fields by their ``custom_id``. When ``custom_id_key`` turns
    ``accept:12345`` into ``accept``, the raw id is kept in the options as ``custom_id``.
    """
    raw = clean(str(data.get("custom_id", "?")))
    name = clean(custom_id_key(raw)) if custom_id_key is not None else raw
    options: dict[str, Any] = {}
    if name != raw:
        options["custom_id"] = raw
    if "values" in data:
        options["values"] = [_plain(v) for v in data.get("values") or ()]
    _modal_fields(data.get("components") or (), options)
    return name or raw, options


def _modal_fields(components: Sequence[Any], into: dict[str, Any]) -> None:
    for component in components:
        if not isinstance(component, Mapping):
            continue
        custom_id = component.get("custom_id")
        if isinstance(custom_id, str) and ("value" in component or "values" in component):
            into[clean(custom_id)] = _plain(component["value"] if "value" in component else component["values"])
        _modal_fields(component.get("components") or (), into)  # action rows
        inner = component.get("component")  # labels (2.6+) hold one component
        if isinstance(inner, Mapping):
            _modal_fields((inner,), into)


def context_and_options(ctx: commands.Context[Any]) -> tuple[str, dict[str, Any]]:
    """Return a prefix invocation's qualified command name (or what was typed) and its arguments."""
    command = ctx.command
    if command is None:
        return clean(str(ctx.invoked_with or "?")), {}
    args = list(ctx.args[2 if command.cog is not None else 1 :])  # after (cog,) ctx
    values: dict[str, Any] = {}
    for name, param in command.clean_params.items():
        if param.kind is inspect.Parameter.KEYWORD_ONLY:
            if name in ctx.kwargs:
                values[clean(name)] = _plain(ctx.kwargs[name])
        elif param.kind is inspect.Parameter.VAR_POSITIONAL:
            values[clean(name)] = [_plain(a) for a in args]
            args = []
        elif args:
            values[clean(name)] = _plain(args.pop(0))
    return command.qualified_name, values


def _plain(value: Any) -> Any:
    """A JSON value for an argument: Discord objects become their id, text is cleaned."""
    if value is None or isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    ident = getattr(value, "id", None)
    if isinstance(ident, int) and not isinstance(ident, bool):
        return ident
    return clean(str(value))


def clean(text: str) -> str:
    """Make user-typed text storable in Postgres jsonb: no NUL, no lone surrogate."""
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    if not text.isascii():
        text = text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    return text
