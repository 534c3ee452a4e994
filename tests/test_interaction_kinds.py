"""Every kind of interaction, through discord.py's own dispatch: prefix and hybrid commands, a
persistent view's buttons, a modal opened by a command, a command that never answers, and
commands still running when the bot closes. Then the rows' round trip through a real Postgres."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import asyncpg
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from bot.payloads import Player, Where, component, dispatch, dispatch_message, message, modal_submit
from discord_harness import ALICE, BOB, CHANNEL_ID, GUILD, GUILD_ID, BotHarness, dm_of, running_bot
from discord_outbox import CommandLog, Outbox, Shipper, log_commands

MATCH_ID = 12345


class QueueView(discord.ui.View):
    """A persistent view: its buttons answer after a restart, with no command before them."""

    def __init__(self) -> None:
        super().__init__(timeout=None)

    @discord.ui.button(label="Accept", custom_id="accept")
    async def accept(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]) -> None:
        await interaction.response.send_message("accepted", ephemeral=True)

    @discord.ui.button(label="Decline", custom_id="decline")
    async def decline(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]) -> None:
        raise RuntimeError("declining is broken")

    @discord.ui.button(label="Ignore", custom_id="ignore")
    async def ignore(self, interaction: discord.Interaction[Any], button: discord.ui.Button[Any]) -> None:
        pass  # never answers: the user sees "This interaction failed"


class MatchView(discord.ui.View):
    """One view per match: its custom_id carries the match id (a dynamic id)."""

    def __init__(self, match_id: int) -> None:
        super().__init__(timeout=None)
        button: discord.ui.Button[Any] = discord.ui.Button(label="Report", custom_id=f"report:{match_id}")
        button.callback = self.report  # type: ignore[method-assign]
        self.add_item(button)

    async def report(self, interaction: discord.Interaction[Any]) -> None:
        await interaction.response.send_message("reported", ephemeral=True)


class ReportModal(discord.ui.Modal, title="Report a player"):
    reason: discord.ui.TextInput[Any] = discord.ui.TextInput(label="Reason", custom_id="reason")

    def __init__(self) -> None:
        super().__init__(custom_id="report_modal")

    async def on_submit(self, interaction: discord.Interaction[Any]) -> None:
        if self.reason.value == "boom":
            raise RuntimeError("the report form is broken")
        await interaction.response.send_message(f"report filed: {self.reason.value}", ephemeral=True)


class KindsBot(commands.Bot):
    """A ``commands.Bot`` using every kind of interaction, with ``log_commands(self, ...)``."""

    def __init__(self, outbox: Outbox, grace: float = 0.2) -> None:
        intents = discord.Intents(guilds=True, messages=True, message_content=True)
        super().__init__(command_prefix="!", intents=intents, help_command=None)
        self.outbox = outbox
        self.grace = grace
        self.command_log: CommandLog | None = None
        self.release = asyncio.Event()
        self.never = asyncio.Event()

        @commands.hybrid_command(description="Always fails")
        async def boom(ctx: commands.Context[Any]) -> None:
            raise RuntimeError("boom")

        @commands.hybrid_command(description="Say hello")
        async def hello(ctx: commands.Context[Any], name: str = "you") -> None:
            await ctx.send(f"hello {name}")

        @commands.command()
        async def hi(ctx: commands.Context[Any], count: int, *, text: str = "") -> None:
            await ctx.send(f"hi x{count} {text}")

        @app_commands.command(description="File a report")
        async def report(interaction: discord.Interaction[Any]) -> None:
            await interaction.response.send_modal(ReportModal())

        @app_commands.command(description="Never answers")
        async def silent(interaction: discord.Interaction[Any]) -> None:
            pass

        @app_commands.command(description="Answers, then waits like view.wait()")
        async def waiter(interaction: discord.Interaction[Any], forever: bool = False) -> None:
            await interaction.response.send_message("waiting")
            await (self.never if forever else self.release).wait()

        for command in (boom, hello, hi):
            self.add_command(command)
        for app in (report, silent, waiter):
            self.tree.add_command(app)

    async def setup_hook(self) -> None:
        self.add_view(QueueView())
        self.add_view(MatchView(MATCH_ID))
        key = lambda custom_id: custom_id.split(":")[0]  # noqa: E731
        self.command_log = log_commands(self, self.outbox, custom_id_key=key, shutdown_grace_s=self.grace)


def kinds_bot(outbox: Outbox) -> discord.Client:
    return KindsBot(outbox)


def carrier(h: BotHarness, custom_ids: list[str], where: Where = GUILD) -> dict[str, Any]:
    """The bot's message carrying buttons with ``custom_ids``."""
    buttons = [{"type": 2, "style": 1, "label": c, "custom_id": c} for c in custom_ids]
    return message("Queue", author=h.standin.bot_user, where=where, components=[{"type": 1, "components": buttons}])


async def press(h: BotHarness, custom_id: str, *, player: Player = ALICE, answered: bool = True) -> list[Any]:
    payload = component(
        custom_id, player=player, where=GUILD, application_id=h.standin.application_id, message=carrier(h, [custom_id])
    )
    return await h.send(payload, answered=answered)


async def say(h: BotHarness, content: str, *, player: Player = ALICE, where: Where = GUILD) -> None:
    member = {**player.member(), "user": player.user()} if where.guild_id is not None else None
    dispatch_message(h.bot, message(content, author=player.user(), where=where, member=member))
    await h.settle()


async def test_hybrid_command_error_is_command_error_both_ways(outbox_path: Path) -> None:
    async with running_bot(outbox_path, make_bot=kinds_bot) as h:
        await h.send(h.payload("boom"), answered=False)  # the default on_command_error answers nothing
        await say(h, "!boom")
        await h.invoke("hello", {"name": "name", "type": 3, "value": "slash"})
        await say(h, "!hello prefix")
        rows = await h.rows()
    assert [(r["command"], r["kind"], r["outcome"]) for r in rows] == [
        ("boom", "slash", "command_error"),
        ("boom", "prefix", "command_error"),
        ("hello", "slash", "ok"),
        ("hello", "prefix", "ok"),
    ]
    assert rows[3]["options"] == {"name": "prefix"} and rows[2]["options"] == {"name": "slash"}
    sent = [e.body.get("content") for e in h.standin.channel_messages()]
    assert sent == ["hello prefix"]


async def test_prefix_commands_carry_their_arguments_and_unknown_ones_are_not_found(outbox_path: Path) -> None:
    async with running_bot(outbox_path, make_bot=kinds_bot) as h:
        await say(h, "!hi 3 good game", where=dm_of(ALICE))
        await say(h, "!hi", player=BOB)  # a required argument missing
        await say(h, "!hi three")  # not an int
        await say(h, "!nosuch thing")
        await say(h, "just chatting")  # no prefix: not a command, no row
        rows = await h.rows()
        application_id = h.standin.application_id
    assert [(r["command"], r["options"], r["outcome"]) for r in rows] == [
        ("hi", {"count": 3, "text": "good game"}, "ok"),
        ("hi", {}, "transform_error"),
        ("hi", {}, "transform_error"),
        ("nosuch", {}, "not_found"),
    ]
    assert all(r["kind"] == "prefix" and r["application_id"] == application_id for r in rows)
    assert rows[0]["guild_id"] is None and rows[0]["channel_id"] == dm_of(ALICE).channel_id
    assert rows[1]["discord_uid"] == BOB.id and rows[1]["guild_id"] == GUILD_ID and rows[1]["channel_id"] == CHANNEL_ID
    assert [e.body.get("content") for e in h.standin.channel_messages()] == ["hi x3 good game"]


async def test_persistent_view_buttons_and_dynamic_ids(outbox_path: Path) -> None:
    async with running_bot(outbox_path, make_bot=kinds_bot) as h:
        accepted = await press(h, "accept")
        await press(h, "decline", answered=False)
        await press(h, "ignore", answered=False)
        reported = await press(h, f"report:{MATCH_ID}", player=BOB)
        rows = await h.rows()
    assert accepted[0].content == "accepted" and reported[0].content == "reported"
    assert [(r["command"], r["kind"], r["outcome"]) for r in rows] == [
        ("accept", "component", "ok"),
        ("decline", "component", "command_error"),
        ("ignore", "component", "no_response"),
        ("report", "component", "ok"),
    ]
    assert rows[3]["options"] == {"custom_id": f"report:{MATCH_ID}"} and rows[3]["discord_uid"] == BOB.id
    assert rows[0]["guild_id"] == GUILD_ID and rows[0]["player_name"] == "Ali (captain)"


async def test_modal_opened_by_a_command_then_submitted(outbox_path: Path) -> None:
    async with running_bot(outbox_path, make_bot=kinds_bot) as h:
        opened = await h.invoke("report")
        app = h.standin.application_id
        filed = await h.send(modal_submit("report_modal", {"reason": "smurfing"}, player=ALICE, where=GUILD, application_id=app))
        await h.invoke("report")
        await h.send(modal_submit("report_modal", {"reason": "boom"}, player=ALICE, where=GUILD, application_id=app), answered=False)
        rows = await h.rows()
    assert opened[0].body["type"] == 9  # MODAL
    assert filed[0].content == "report filed: smurfing"
    assert [(r["command"], r["kind"], r["outcome"]) for r in rows] == [
        ("report", "slash", "ok"),
        ("report_modal", "modal", "ok"),
        ("report", "slash", "ok"),
        ("report_modal", "modal", "command_error"),
    ]
    assert rows[1]["options"] == {"reason": "smurfing"}


async def test_a_command_that_never_answers_is_no_response(outbox_path: Path) -> None:
    async with running_bot(outbox_path, make_bot=kinds_bot) as h:
        sent = await h.send(h.payload("silent"), answered=False)
        rows = await h.rows()
    assert sent == []
    assert [(r["command"], r["outcome"]) for r in rows] == [("silent", "no_response")]


async def test_commands_running_at_close_are_logged_before_the_outbox_closes(outbox_path: Path) -> None:
    """One finishes within the grace (its real outcome), two never do (``interrupted``), and the
    user's order of shutdown is kept: ``bot.close()``, then the outbox."""
    async with running_bot(outbox_path, make_bot=lambda ob: KindsBot(ob, grace=1.0)) as h:
        bot = h.bot
        assert isinstance(bot, KindsBot)
        for forever in (True, False, True):
            payload = h.payload("waiter", {"name": "forever", "type": 5, "value": forever})
            response = h.standin.expect_response(int(payload["id"]))
            dispatch(bot, payload)
            await asyncio.wait_for(asyncio.shield(response), 10)  # answered, now waiting
        assert h.command_log.stats.running == 3
        asyncio.get_running_loop().call_later(0.02, bot.release.set)
        await bot.close()
        stats = h.command_log.stats
        rows = await h.rows()
        stuck = [t for t in asyncio.all_tasks() if t.get_name() == "CommandTree-invoker" and not t.done()]
        for task in stuck:
            task.cancel()  # as asyncio.run does at exit: the call is not logged a second time
        await asyncio.gather(*stuck, return_exceptions=True)
        assert len(stuck) == 2 and len(await h.rows()) == 3
    assert [(r["options"], r["outcome"]) for r in rows] == [
        ({"forever": False}, "ok"),
        ({"forever": True}, "interrupted"),
        ({"forever": True}, "interrupted"),
    ]
    assert (stats.interrupted, stats.running, stats.logged) == (2, 2, 3)  # logged, yet still running


async def test_a_bot_closed_from_inside_a_command_logs_that_command(outbox_path: Path) -> None:
    def make(ob: Outbox) -> discord.Client:
        bot = KindsBot(ob, grace=5.0)

        @bot.tree.command(description="Shut the bot down")
        async def shutdown(interaction: discord.Interaction[Any]) -> None:
            await interaction.response.send_message("bye")
            await bot.close()  # waits for nothing but itself: it must not wait out its own grace

        return bot

    async with running_bot(outbox_path, make_bot=make) as h:
        await asyncio.wait_for(h.invoke("shutdown"), 4)
        rows = await h.rows()
    assert [(r["command"], r["outcome"]) for r in rows] == [("shutdown", "ok")]


async def test_tree_form_still_logs_only_application_commands(outbox_path: Path) -> None:
    def make(ob: Outbox) -> discord.Client:
        bot = KindsBot(ob)

        async def setup_hook() -> None:
            bot.add_view(QueueView())
            bot.command_log = log_commands(bot.tree, ob)

        bot.setup_hook = setup_hook  # type: ignore[method-assign]
        return bot

    async with running_bot(outbox_path, make_bot=make) as h:
        await press(h, "accept")
        await say(h, "!hello")
        await h.send(h.payload("boom"), answered=False)  # a hybrid's error: still command_error
        rows = await h.rows()
    assert [(r["command"], r["kind"], r["outcome"]) for r in rows] == [("boom", "slash", "command_error")]


async def test_every_kind_ships_into_postgres(outbox_path: Path, pg_dsn: str) -> None:
    async with running_bot(outbox_path, make_bot=kinds_bot) as h:
        await h.invoke("hello")
        await say(h, "!hello there")
        await press(h, "accept")
        await h.invoke("report")
        await h.send(modal_submit("report_modal", {"reason": "afk"}, player=BOB, where=GUILD, application_id=h.standin.application_id))
        application_id = h.standin.application_id
    async with Shipper(outbox_path, pg_dsn) as s:
        await s.drain(timeout=30)
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch("SELECT command, kind, application_id, outcome, discord_uid FROM command_calls ORDER BY created_at")
    finally:
        await conn.close()
    assert [(r["command"], r["kind"], r["outcome"]) for r in rows] == [
        ("hello", "slash", "ok"),
        ("hello", "prefix", "ok"),
        ("accept", "component", "ok"),
        ("report", "slash", "ok"),
        ("report_modal", "modal", "ok"),
    ]
    assert {r["application_id"] for r in rows} == {application_id}
    assert rows[-1]["discord_uid"] == BOB.id


def test_attaching_twice_or_to_something_else_is_refused() -> None:
    with pytest.raises(TypeError, match=r"discord.py 2.3 or later \(below 3\)"):
        CommandLog(object()).attach(object())  # type: ignore[arg-type]


@pytest.mark.skipif(not hasattr(discord.ui, "DynamicItem"), reason="DynamicItem is new in discord.py 2.4")
async def test_dynamic_items_are_components_too(outbox_path: Path) -> None:
    class Ticket(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"ticket:(?P<id>[0-9]+)"):  # type: ignore[call-arg,misc]
        def __init__(self, ticket_id: int) -> None:
            super().__init__(discord.ui.Button(label="Close", custom_id=f"ticket:{ticket_id}"))
            self.ticket_id = ticket_id

        @classmethod
        async def from_custom_id(cls, interaction: Any, item: Any, match: Any) -> Ticket:
            return cls(int(match["id"]))

        async def callback(self, interaction: discord.Interaction[Any]) -> None:
            await interaction.response.send_message(f"closed ticket {self.ticket_id}")

    def make(ob: Outbox) -> discord.Client:
        bot = KindsBot(ob)
        bot.add_dynamic_items(Ticket)
        return bot

    async with running_bot(outbox_path, make_bot=make) as h:
        sent = await press(h, "ticket:77")
        rows = await h.rows()
    assert sent[0].content == "closed ticket 77"
    assert [(r["command"], r["kind"], r["options"], r["outcome"]) for r in rows] == [
        ("ticket", "component", {"custom_id": "ticket:77"}, "ok")
    ]


async def test_an_auto_sharded_bot_is_logged_the_same_way(outbox_path: Path) -> None:
    def make(ob: Outbox) -> discord.Client:
        bot = commands.AutoShardedBot(command_prefix="!", intents=discord.Intents(guilds=True), shard_count=1)

        @bot.tree.command(description="ping")
        async def ping(interaction: discord.Interaction[Any]) -> None:
            await interaction.response.send_message("pong")

        async def setup_hook() -> None:
            bot.command_log = log_commands(bot, ob)  # type: ignore[attr-defined]

        bot.setup_hook = setup_hook  # type: ignore[method-assign]
        return bot

    async with running_bot(outbox_path, make_bot=make) as h:
        sent = await h.invoke("ping")
        rows = await h.rows()
    assert sent[0].content == "pong"
    assert [(r["command"], r["kind"], r["outcome"]) for r in rows] == [("ping", "slash", "ok")]
