"""INTERACTION_CREATE and MESSAGE_CREATE payloads shaped like the ones Discord's gateway sends (API v10).

Slash commands and context menus (type 2), autocomplete (4), component presses (3: a
``custom_id`` and the message carrying the component) and modal submissions (5: the modal's
``custom_id`` and its fields in action rows), and plain messages, as a prefix command arrives.

discord.py 2.7.1 reads these keys without a default, so each builder fills them: ``id``,
``application_id``, ``type``, ``token``, ``version``, ``attachment_size_limit``; in guilds
``member.user``, ``member.roles``, ``member.flags`` and the channel's ``id``, ``name``,
``position``. A guild interaction carries ``guild_id`` and ``member`` (the user becomes a
``Member``); a DM carries a top-level ``user`` and a channel of type 1.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Any

from .standin import snowflake

__all__ = [
    "Player", "Where", "slash", "option", "subcommand", "group", "user_option", "dispatch",
    "component", "modal_submit", "message", "dispatch_message",
]  # fmt: skip

# Discord's application command option types
SUB_COMMAND, SUB_COMMAND_GROUP, STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER = range(1, 11)
_TYPE_OF = {str: STRING, int: INTEGER, bool: BOOLEAN, float: NUMBER}


@dataclass(frozen=True, kw_only=True)
class Player:
    """A Discord user who invokes commands."""

    id: int
    username: str
    global_name: str | None = None
    nick: str | None = None  # their nickname in the guild, if any

    def user(self) -> dict[str, Any]:
        """The user object."""
        return {
            "id": str(self.id),
            "username": self.username,
            "global_name": self.global_name,
            "discriminator": "0",
            "avatar": None,
            "public_flags": 0,
        }

    def member(self) -> dict[str, Any]:
        """The guild member object, without its ``user`` (as in ``resolved.members``)."""
        return {
            "nick": self.nick,
            "avatar": None,
            "roles": [],
            "joined_at": "2024-06-01T12:00:00+00:00",
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "permissions": "2248473465835073",
        }


@dataclass(frozen=True, kw_only=True)
class Where:
    """Where a command is invoked: a guild text channel, or a DM when ``guild_id`` is None."""

    channel_id: int
    guild_id: int | None = None
    channel_name: str = "ladder"


def option(name: str, value: str | int | float | bool, *, focused: bool = False) -> dict[str, Any]:
    """A plain option (string, integer, boolean or number); ``focused`` while autocompleting."""
    opt = {"name": name, "type": _TYPE_OF[type(value)], "value": value}
    return {**opt, "focused": True} if focused else opt


def user_option(name: str, user: Player) -> dict[str, Any]:
    """A user option; its value is the id, the object travels in ``data.resolved``."""
    return {"name": name, "type": USER, "value": str(user.id), "_resolve": user}


def subcommand(name: str, *options: dict[str, Any]) -> dict[str, Any]:
    """A subcommand carrying its own options."""
    return {"name": name, "type": SUB_COMMAND, "options": list(options)}


def group(name: str, sub: dict[str, Any]) -> dict[str, Any]:
    """A subcommand group wrapping one subcommand."""
    return {"name": name, "type": SUB_COMMAND_GROUP, "options": [sub]}


def slash(
    name: str,
    *options: dict[str, Any],
    player: Player,
    where: Where,
    application_id: int,
    command_guild_id: int | None = None,
    autocomplete: bool = False,
) -> dict[str, Any]:
    """Return the ``d`` object of an INTERACTION_CREATE for ``/name options...``.

    ``command_guild_id`` is set only for a command registered in one guild (not global);
    ``autocomplete`` makes it the type-4 interaction Discord sends while an option is typed.
    """
    resolved: dict[str, dict[str, Any]] = {}
    data: dict[str, Any] = {
        "id": str(snowflake()),
        "name": name,
        "type": 1,
        "options": [_strip(o, resolved, where) for o in options],
    }
    if resolved:
        data["resolved"] = resolved
    if command_guild_id is not None:
        data["guild_id"] = str(command_guild_id)
    return _interaction(4 if autocomplete else 2, data, player=player, where=where, application_id=application_id)


def component(
    custom_id: str,
    *,
    player: Player,
    where: Where,
    application_id: int,
    message: dict[str, Any],
    component_type: int = 2,
    values: list[str] | None = None,
) -> dict[str, Any]:
    """The ``d`` object of a button press (``component_type`` 2) or select (3, with ``values``).

    ``message`` is the message carrying the component, as :func:`message` makes it.
    """
    data: dict[str, Any] = {"custom_id": custom_id, "component_type": component_type}
    if values is not None:
        data["values"] = values
    payload = _interaction(3, data, player=player, where=where, application_id=application_id)
    payload["message"] = message
    return payload


def modal_submit(
    custom_id: str, fields: dict[str, str], *, player: Player, where: Where, application_id: int
) -> dict[str, Any]:
    """The ``d`` object of a modal submission: each text input in an action row of its own."""
    rows = [{"type": 1, "components": [{"type": 4, "custom_id": k, "value": v}]} for k, v in fields.items()]
    return _interaction(5, {"custom_id": custom_id, "components": rows}, player=player, where=where, application_id=application_id)


def message(
    content: str,
    *,
    author: dict[str, Any],
    where: Where,
    member: dict[str, Any] | None = None,
    components: list[dict[str, Any]] | None = None,
    interaction: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A message object (the ``d`` of a MESSAGE_CREATE, or the message a component sits on).

    ``author`` is a user object (:meth:`Player.user`, or the stand-in's ``bot_user``); in a guild
    ``member`` is the author's member object without its ``user``. ``interaction`` is the
    ``{"id", "type", "name", "user"}`` of the command the message answered (discord.py 2.3 finds
    a command's view by it).
    """
    payload: dict[str, Any] = {
        "id": str(snowflake()),
        "channel_id": str(where.channel_id),
        "type": 0,
        "content": content,
        "author": author,
        "attachments": [],
        "embeds": [],
        "mentions": [],
        "mention_roles": [],
        "mention_everyone": False,
        "pinned": False,
        "tts": False,
        "timestamp": "2025-01-01T00:00:00+00:00",
        "edited_timestamp": None,
        "flags": 0,
        "components": components or [],
    }
    if interaction is not None:
        payload["interaction"] = interaction
    if where.guild_id is not None:
        payload["guild_id"] = str(where.guild_id)
        if member is not None:
            payload["member"] = member
    return payload


def _interaction(kind: int, data: dict[str, Any], *, player: Player, where: Where, application_id: int) -> dict[str, Any]:
    payload: dict[str, Any] = {
        "id": str(snowflake()),
        "application_id": str(application_id),
        "type": kind,
        "token": "aW50ZXJhY3Rpb24" + secrets.token_urlsafe(24),
        "version": 1,
        "attachment_size_limit": 10 * 1024 * 1024,
        "locale": "en-US",
        "app_permissions": "2248473465835073",
        "entitlements": [],
        "authorizing_integration_owners": {"0": str(where.guild_id or 0)},
        "data": data,
    }
    if where.guild_id is not None:
        payload["guild_id"] = str(where.guild_id)
        payload["guild_locale"] = "en-US"
        payload["guild"] = {"id": str(where.guild_id), "locale": "en-US", "features": []}
        payload["member"] = {**player.member(), "user": player.user()}
        payload["channel_id"] = str(where.channel_id)
        payload["channel"] = {
            "id": str(where.channel_id),
            "type": 0,
            "guild_id": str(where.guild_id),
            "name": where.channel_name,
            "position": 3,
            "nsfw": False,
            "parent_id": None,
            "permissions": "2248473465835073",
        }
        payload["context"] = 0
    else:
        payload["user"] = player.user()
        payload["channel_id"] = str(where.channel_id)
        payload["channel"] = {"id": str(where.channel_id), "type": 1, "recipients": [player.user()]}
        payload["context"] = 1
    return payload


def _strip(opt: dict[str, Any], resolved: dict[str, dict[str, Any]], where: Where) -> dict[str, Any]:
    """Move resolved objects out of an option into ``data.resolved``, recursively."""
    out = {k: v for k, v in opt.items() if k != "_resolve"}
    if "options" in out:
        out["options"] = [_strip(o, resolved, where) for o in out["options"]]
    user = opt.get("_resolve")
    if isinstance(user, Player):
        resolved.setdefault("users", {})[str(user.id)] = user.user()
        if where.guild_id is not None:
            resolved.setdefault("members", {})[str(user.id)] = user.member()
    return out


def dispatch(client: Any, payload: dict[str, Any]) -> None:
    """Hand ``payload`` to discord.py exactly as its gateway would (the INTERACTION_CREATE parser).

    The command then runs in a task of its own: this returns before it finishes.
    """
    client._connection.parsers["INTERACTION_CREATE"](payload)


def dispatch_message(client: Any, payload: dict[str, Any]) -> None:
    """Hand a message to discord.py as its gateway would (the MESSAGE_CREATE parser)."""
    client._connection.parsers["MESSAGE_CREATE"](payload)
