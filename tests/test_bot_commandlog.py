"""The command log, end to end through discord.py's own dispatch: one row per command, exactly."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import discord
import pytest
from discord import app_commands

from bot import CommandLog, command_and_options, log_commands
from bot.ladder import LadderBot, LadderTree
from bot.payloads import option, subcommand, user_option
from discord_harness import ALICE, BOB, CHANNEL_ID, GUILD_ID, BotHarness, dm_of, running_bot


async def accept_terms(h: BotHarness, player: Any = ALICE) -> None:
    await h.invoke("termsofservice", player=player)


async def test_guild_command_is_logged_with_every_column(outbox_path: Path) -> None:
    async with running_bot(outbox_path) as h:
        sent = await h.invoke("leaderboard", option("page", 2))
        rows = await h.rows()
    assert len(sent) == 1 and sent[0].content is not None and sent[0].content.startswith("Leaderboard, page 2/")
    assert len(rows) == 1
    row = rows[0]
    assert set(row) == {
        "discord_uid", "player_name", "command", "kind", "options", "guild_id", "channel_id", "application_id",
        "outcome", "latency_ms",
    }  # fmt: skip
    assert row["kind"] == "slash" and row["application_id"] == h.standin.application_id
    assert row["discord_uid"] == ALICE.id
    assert row["player_name"] == "Ali (captain)"  # the guild nickname is the display name there
    assert row["command"] == "leaderboard"
    assert row["options"] == {"page": 2}
    assert row["guild_id"] == GUILD_ID and row["channel_id"] == CHANNEL_ID
    assert row["outcome"] == "ok"
    assert isinstance(row["latency_ms"], float) and 0 < row["latency_ms"] < 10_000


async def test_dm_command_has_no_guild_and_the_global_display_name(outbox_path: Path) -> None:
    async with running_bot(outbox_path) as h:
        sent = await h.invoke("termsofservice", where=dm_of(ALICE))
        await h.invoke("profile", player=BOB, where=dm_of(BOB))
        rows = await h.rows()
    assert sent[0].ephemeral and "terms of service" in (sent[0].content or "")
    assert [r["command"] for r in rows] == ["termsofservice", "profile"]
    assert rows[0]["guild_id"] is None and rows[0]["channel_id"] == dm_of(ALICE).channel_id
    assert rows[0]["player_name"] == "Alice"  # global name, no nickname in DMs
    assert rows[1]["player_name"] == "bob"  # no global name: the username
    assert rows[0]["options"] == {} and rows[0]["outcome"] == "ok"


async def test_subcommands_check_failures_and_raising_commands(outbox_path: Path) -> None:
    async with running_bot(outbox_path) as h:
        refused = await h.invoke("queue", subcommand("join", option("mode", "2v2")))
        await accept_terms(h)
        joined = await h.invoke("queue", subcommand("join", option("mode", "2v2")))
        twice = await h.invoke("queue", subcommand("join"))
        left = await h.invoke("queue", subcommand("leave"))
        bad_country = await h.invoke("setcountry", option("country", "zz"), where=dm_of(ALICE))
        good_country = await h.invoke("setcountry", option("country", "fi"))
        rows = await h.rows()
    # what the user saw: the tree's error handler answered the failures
    assert refused[0].ephemeral and "accept the rules with /termsofservice" in (refused[0].content or "")
    assert "number 1" in (joined[0].content or "")
    assert "already queued for 2v2" in (twice[0].content or "")
    assert "Left the 2v2 queue" in (left[0].content or "")
    assert "unknown country code 'zz'" in (bad_country[0].content or "")
    assert "Finland" in (good_country[0].content or "")
    logged = [(r["command"], r["options"], r["outcome"]) for r in rows]
    assert logged == [
        ("queue join", {"mode": "2v2"}, "check_failure"),
        ("termsofservice", {}, "ok"),
        ("queue join", {"mode": "2v2"}, "ok"),
        ("queue join", {}, "command_error"),
        ("queue leave", {}, "ok"),
        ("setcountry", {"country": "zz"}, "command_error"),
        ("setcountry", {"country": "fi"}, "ok"),
    ]


async def test_resolved_user_option_is_reduced_to_its_id(outbox_path: Path) -> None:
    async with running_bot(outbox_path) as h:
        guild = await h.invoke("profile", user_option("user", BOB))
        dm = await h.invoke("profile", user_option("user", ALICE), player=BOB, where=dm_of(BOB))
        rows = await h.rows()
    assert "bob has not played yet" in (guild[0].content or "")
    assert "Ali" in (dm[0].content or "") or "Alice" in (dm[0].content or "")
    assert rows[0]["options"] == {"user": BOB.id} and isinstance(rows[0]["options"]["user"], int)
    assert rows[1]["options"] == {"user": ALICE.id} and rows[1]["discord_uid"] == BOB.id


async def test_concurrent_commands_each_get_their_own_outcome(outbox_path: Path) -> None:
    """Errors are matched to their command per task, not per bot, when commands overlap."""
    async with running_bot(outbox_path) as h:
        await accept_terms(h)
        payloads = []
        for i in range(30):
            if i % 3 == 0:
                payloads.append(h.payload("setcountry", option("country", "nowhere")))
            elif i % 3 == 1:
                payloads.append(h.payload("queue", subcommand("status")))
            else:
                payloads.append(h.payload("queue", subcommand("leave"), player=BOB))  # BOB never accepted
        sent = await asyncio.wait_for(asyncio.gather(*(h.send(p) for p in payloads)), 30)
        rows = await h.rows()
    assert all(len(s) == 1 for s in sent)
    outcomes = {(r["command"], r["outcome"]) for r in rows[1:]}
    assert outcomes == {("setcountry", "command_error"), ("queue status", "ok"), ("queue leave", "check_failure")}
    assert len(rows) == 31


class _Gate(LadderTree):
    """A tree whose global check refuses one user (neither completion nor on_error fires)."""

    async def interaction_check(self, interaction: discord.Interaction[Any], /) -> bool:
        return interaction.user.id != BOB.id


async def test_global_interaction_check_refusal_is_a_check_failure(outbox_path: Path) -> None:
    async with running_bot(outbox_path, make_bot=lambda ob: LadderBot(outbox=ob, tree_cls=_Gate)) as h:
        silent = await h.send(h.payload("leaderboard", player=BOB), answered=False)
        await h.invoke("leaderboard")
        rows = await h.rows()
    assert silent == []  # the refused command never answered
    assert [(r["discord_uid"], r["outcome"]) for r in rows] == [(BOB.id, "check_failure"), (ALICE.id, "ok")]


async def test_timeouts_and_error_handlers_set_later_with_tree_error(outbox_path: Path) -> None:
    def make(ob: Any) -> LadderBot:
        bot = LadderBot(outbox=ob)

        @bot.tree.command(description="Ask a slow service")
        async def slowservice(interaction: discord.Interaction[Any], seconds: float = 0.01) -> None:
            async with asyncio.timeout(seconds / 10):
                await asyncio.sleep(seconds)

        return bot

    async with running_bot(outbox_path, make_bot=make) as h:
        default = await h.invoke("slowservice")

        seen: list[str] = []

        @h.bot.tree.error  # replaces tree.on_error after the log was attached in setup_hook
        async def on_error(interaction: discord.Interaction[Any], error: app_commands.AppCommandError) -> None:
            seen.append(type(error).__name__)
            await interaction.response.send_message("custom handler", ephemeral=True)

        custom = await h.invoke("slowservice", option("seconds", 0.02))
        raised = await h.invoke("setcountry", option("country", "x"))  # check failure: terms not accepted
        rows = await h.rows()
    assert "Something went wrong" in (default[0].content or "")
    assert custom[0].content == "custom handler" and raised[0].content == "custom handler"
    assert seen == ["CommandInvokeError", "CheckFailure"]
    assert [(r["command"], r["outcome"]) for r in rows] == [
        ("slowservice", "timeout"),
        ("slowservice", "timeout"),
        ("setcountry", "check_failure"),
    ]
    assert rows[1]["options"] == {"seconds": 0.02}


async def test_autocomplete_is_answered_but_not_logged(outbox_path: Path) -> None:
    async with running_bot(outbox_path) as h:
        sent = await h.invoke("setcountry", option("country", "fin", focused=True), autocomplete=True)
        rows = await h.rows()
    assert sent[0].body["type"] == 8  # APPLICATION_COMMAND_AUTOCOMPLETE_RESULT
    assert {"name": "Finland (FI)", "value": "FI"} in sent[0].body["data"]["choices"]
    assert rows == []


async def test_detach_restores_the_tree_and_stops_logging(outbox_path: Path) -> None:
    async with running_bot(outbox_path, make_bot=lambda ob: LadderBot()) as h:
        tree = h.bot.tree
        original_on_error = tree.on_error
        command_log = log_commands(tree, h.outbox)
        assert "_call" in vars(tree)
        with pytest.raises(RuntimeError, match="already has a CommandLog"):
            CommandLog(h.outbox).attach(tree)
        await h.invoke("leaderboard")
        command_log.detach()
        assert "_call" not in vars(tree) and "on_error" not in vars(tree)
        assert tree.on_error == original_on_error
        after = await h.invoke("leaderboard", option("page", 3))
        rows = await h.rows()
    assert "page 3" in (after[0].content or "")
    assert len(rows) == 1 and command_log.stats.logged == 1 and command_log.stats.failed == 0


def test_options_from_data_cover_every_resolved_type_and_bad_text() -> None:
    data = {
        "name": "admin",
        "options": [
            {
                "name": "roles",
                "type": 2,
                "options": [
                    {
                        "name": "grant",
                        "type": 1,
                        "options": [
                            {"name": "role", "type": 8, "value": "555"},
                            {"name": "channel", "type": 7, "value": "666"},
                            {"name": "who", "type": 9, "value": "777"},
                            {"name": "file", "type": 11, "value": "888"},
                            {"name": "note", "type": 3, "value": "a\x00b\ud800c"},
                            {"name": "weight", "type": 10, "value": 1.5},
                            {"name": "loud", "type": 5, "value": True},
                        ],
                    }
                ],
            }
        ],
    }
    name, options = command_and_options(data)
    assert name == "admin roles grant"
    assert options == {
        "role": 555, "channel": 666, "who": 777, "file": 888, "note": "a\ufffdb\ufffd\ufffd\ufffdc", "weight": 1.5,
        "loud": True,
    }  # fmt: skip
    assert command_and_options({"name": "Report", "type": 2, "target_id": "999"}) == ("Report", {"target": 999})
