"""A local stand-in for Discord's REST API, so a real discord.py bot runs with no network.

discord.py builds every REST URL, interaction responses and follow-ups included, from
``discord.http.Route.BASE``; pointing it at an aiohttp server on a loopback port lets the bot log
in for real (``GET /users/@me``, ``GET /oauth2/applications/@me``), run ``setup_hook`` and answer
interactions (and post prefix commands' replies) over real HTTP, which this server records. It
answers only what such a bot needs; anything else gets a Discord-shaped 404.

It can stand in for the gateway too (``/gateway``: HELLO, heartbeat ACKs, READY, then whatever
:meth:`DiscordStandIn.send_event` pushes), for a bot started with ``Client.start`` once
``DiscordWebSocket.DEFAULT_GATEWAY`` points at :attr:`DiscordStandIn.gateway` (see :func:`pointed_at`).

Two details discord.py insists on: the ``Content-Type`` must be exactly
``application/json`` (aiohttp's ``json_response`` appends a charset and discord.py then reads
the body as text), and since 2.5 the interaction callback expects ``{"interaction": {...}}``.
"""

from __future__ import annotations

import asyncio
import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import discord.gateway
import discord.http
import yarl
from aiohttp import WSMsgType, web

__all__ = ["DiscordStandIn", "Exchange", "snowflake", "pointed_at"]

_DISCORD_EPOCH_MS = 1420070400000
_counter = 0


def snowflake() -> int:
    """Return a fresh Discord-style id (time-ordered, unique in this process)."""
    global _counter
    _counter = (_counter + 1) & 0x3FFFFF
    return ((int(time.time() * 1000) - _DISCORD_EPOCH_MS) << 22) | _counter


@dataclass(frozen=True, kw_only=True)
class Exchange:
    """One request the bot made to the stand-in."""

    method: str
    path: str
    body: Any
    interaction_id: int | None = None
    token: str | None = None
    at_ns: int = field(default_factory=time.perf_counter_ns)

    @property
    def content(self) -> str | None:
        """The message text the bot sent, if any."""
        data = self.body.get("data", self.body) if isinstance(self.body, dict) else None
        return data.get("content") if isinstance(data, dict) else None

    @property
    def ephemeral(self) -> bool:
        """True when the message was flagged ephemeral (only the invoking user sees it)."""
        data = self.body.get("data", self.body) if isinstance(self.body, dict) else None
        return bool(isinstance(data, dict) and int(data.get("flags") or 0) & 64)


@contextmanager
def pointed_at(base: str, gateway: str | None = None) -> Iterator[None]:
    """Point discord.py's REST base URL (and gateway, if given) at a stand-in, then restore them."""
    saved = discord.http.Route.BASE
    saved_gateway = discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    discord.http.Route.BASE = base
    if gateway is not None:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)
    try:
        yield
    finally:
        discord.http.Route.BASE = saved
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved_gateway


class DiscordStandIn:
    """Discord's REST API on ``127.0.0.1`` (free port), recording what the bot sends.

    Parameters
    ----------
    application_id, bot_user_id:
        Ids the stand-in reports for the bot's application and user.
    valid_token:
        ``GET /users/@me`` answers 401 (discord.py raises ``LoginFailure``) for any other token;
        ``None`` accepts every token.
    """

    def __init__(
        self,
        *,
        application_id: int | None = None,
        bot_user_id: int | None = None,
        valid_token: str | None = None,
    ) -> None:
        self.application_id = application_id or snowflake()
        self.bot_user_id = bot_user_id or snowflake()
        self.valid_token = valid_token
        self.exchanges: list[Exchange] = []
        self._waiters: dict[int, asyncio.Future[Exchange]] = {}
        self._token_to_interaction: dict[str, int] = {}
        self._runner: web.AppRunner | None = None
        self._sockets: list[web.WebSocketResponse] = []
        self._sequence = 0
        self.identified = asyncio.Event()
        self.base = ""
        self.gateway = ""

    @property
    def bot_user(self) -> dict[str, Any]:
        """The bot's user object, as Discord sends it."""
        return {
            "id": str(self.bot_user_id),
            "username": "ladder",
            "discriminator": "0",
            "global_name": "Ladder",
            "avatar": None,
            "bot": True,
            "flags": 0,
        }

    async def start(self) -> str:
        """Start serving and return the base URL to put in ``Route.BASE``."""
        app = web.Application()
        app.router.add_route("*", "/api/v10/{tail:.*}", self._handle)
        app.router.add_get("/gateway", self._gateway)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base = f"http://127.0.0.1:{port}/api/v10"
        self.gateway = f"ws://127.0.0.1:{port}/gateway"
        return self.base

    async def close(self) -> None:
        """Stop serving; pending waiters are cancelled."""
        runner, self._runner = self._runner, None
        for ws in self._sockets:
            await ws.close()
        if runner is not None:
            await runner.cleanup()
        for waiter in self._waiters.values():
            waiter.cancel()
        self._waiters.clear()

    async def __aenter__(self) -> DiscordStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if self._runner is not None:
            _warn("DiscordStandIn was never closed", ResourceWarning, source=self)

    # -- what tests and the simulation read ---------------------------------------------------

    def expect_response(self, interaction_id: int) -> asyncio.Future[Exchange]:
        """Return a future resolved by the first response to ``interaction_id``.

        Call it before dispatching the interaction; await it under a timeout.
        """
        future = self._waiters.get(interaction_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._waiters[interaction_id] = future
        return future

    def forget(self, interaction_id: int) -> None:
        """Drop the waiter for ``interaction_id`` (after a timeout, say)."""
        future = self._waiters.pop(interaction_id, None)
        if future is not None and not future.done():
            future.cancel()

    def responses_to(self, interaction_id: int) -> list[Exchange]:
        """Every response and follow-up sent for ``interaction_id``, in order."""
        return [e for e in self.exchanges if e.interaction_id == interaction_id]

    async def send_event(self, name: str, data: dict[str, Any]) -> None:
        """Push a gateway DISPATCH (``INTERACTION_CREATE``, say) to every connected bot."""
        self._sequence += 1
        for ws in self._sockets:
            await ws.send_json({"op": 0, "t": name, "s": self._sequence, "d": data})

    # -- the gateway ----------------------------------------------------------------------------

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        self._sockets.append(ws)
        try:
            await ws.send_json({"op": 10, "d": {"heartbeat_interval": 41250}})
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                op = json.loads(msg.data).get("op")
                if op == 1:  # heartbeat
                    await ws.send_json({"op": 11})
                elif op == 2:  # identify
                    self._sequence += 1
                    ready = {
                        "v": 10,
                        "user": self.bot_user,
                        "guilds": [],
                        "session_id": "standin-session",
                        "resume_gateway_url": self.gateway,
                        "application": {"id": str(self.application_id), "flags": 0},
                    }
                    await ws.send_json({"op": 0, "t": "READY", "s": self._sequence, "d": ready})
                    self.identified.set()
        finally:
            self._sockets.remove(ws)
        return ws

    # -- the server ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        parts = request.match_info["tail"].strip("/").split("/")
        method = request.method
        if parts == ["users", "@me"] and method == "GET":
            auth = request.headers.get("Authorization", "")
            if self.valid_token is not None and auth != f"Bot {self.valid_token}":
                return _json({"message": "401: Unauthorized", "code": 0}, status=401)
            return _json(self.bot_user)
        if parts == ["oauth2", "applications", "@me"] and method == "GET":
            return _json(self._application())
        if parts[:1] == ["applications"] and parts[-1] == "commands" and method == "PUT":
            return _json([])
        if len(parts) == 4 and parts[0] == "interactions" and parts[3] == "callback" and method == "POST":
            return await self._callback(request, int(parts[1]), parts[2])
        if len(parts) >= 3 and parts[0] == "webhooks":
            return await self._webhook(request, parts)
        if len(parts) == 3 and parts[0] == "channels" and parts[2] == "messages" and method == "POST":
            return await self._channel_message(request)  # ctx.send of a prefix command
        return _json({"message": f"404: Not Found ({method} /{'/'.join(parts)})", "code": 0}, status=404)

    async def _callback(self, request: web.Request, interaction_id: int, token: str) -> web.Response:
        body = await _read_body(request)
        self._token_to_interaction.setdefault(token, interaction_id)
        self._record(Exchange(method="POST", path=request.path, body=body, interaction_id=interaction_id, token=token))
        kind = body.get("type", 4) if isinstance(body, dict) else 4
        return _json(
            {
                "interaction": {"id": str(interaction_id), "type": 2},
                "resource": {"type": kind},
            }
        )

    async def _webhook(self, request: web.Request, parts: list[str]) -> web.Response:
        token = parts[2]
        body = await _read_body(request) if request.can_read_body else None
        interaction_id = self._token_to_interaction.get(token)
        self._record(
            Exchange(method=request.method, path=request.path, body=body, interaction_id=interaction_id, token=token)
        )
        if request.method == "DELETE":
            return web.Response(status=204)
        content = body.get("content") if isinstance(body, dict) else None
        return _json(self._message(content))

    async def _channel_message(self, request: web.Request) -> web.Response:
        body = await _read_body(request)
        self._record(Exchange(method="POST", path=request.path, body=body))
        content = body.get("content") if isinstance(body, dict) else None
        return _json(self._message(content))

    def channel_messages(self) -> list[Exchange]:
        """Every message the bot posted to a channel (not as an interaction response), in order."""
        return [e for e in self.exchanges if e.interaction_id is None and "/channels/" in e.path]

    def _record(self, exchange: Exchange) -> None:
        self.exchanges.append(exchange)
        if exchange.interaction_id is not None:
            waiter = self._waiters.pop(exchange.interaction_id, None)
            if waiter is not None and not waiter.done():
                waiter.set_result(exchange)

    def _application(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": "Ladder",
            "icon": None,
            "description": "",
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": {**self.bot_user, "id": str(snowflake()), "username": "owner", "bot": False},
            "verify_key": "0" * 64,
            "flags": 0,
        }

    def _message(self, content: str | None) -> dict[str, Any]:
        return {
            "id": str(snowflake()),
            "channel_id": str(snowflake()),
            "type": 0,
            "content": content or "",
            "author": self.bot_user,
            "attachments": [],
            "embeds": [],
            "mentions": [],
            "mention_roles": [],
            "pinned": False,
            "mention_everyone": False,
            "tts": False,
            "timestamp": "2025-01-01T00:00:00+00:00",
            "edited_timestamp": None,
            "flags": 0,
            "components": [],
        }


def _json(data: Any, *, status: int = 200) -> web.Response:
    # Exactly "application/json": with a charset appended discord.py reads the body as text.
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


async def _read_body(request: web.Request) -> Any:
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        async for part in reader:
            if getattr(part, "name", None) == "payload_json":
                return json.loads(await part.text())  # type: ignore[union-attr]
        return None
    text = await request.text()
    return json.loads(text) if text else None
