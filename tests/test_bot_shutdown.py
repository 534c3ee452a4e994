"""The ladder bot's ``/challenge``: buttons logged as components, and a challenge still waiting
for its answer when ``python -m bot run`` gets SIGTERM is logged ``interrupted``, not lost."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path
from typing import Any

from bot.payloads import component, dispatch, message, slash, user_option
from bot.runner import RunConfig, run_bot
from bot.standin import DiscordStandIn, pointed_at
from discord_harness import ALICE, BOB, GUILD, BotHarness, outbox_rows, running_bot


def challenge_message(h: BotHarness, challenge_id: int) -> dict[str, Any]:
    buttons = [
        {"type": 2, "style": 3, "label": "Accept", "custom_id": "challenge:accept"},
        {"type": 2, "style": 4, "label": "Decline", "custom_id": "challenge:decline"},
    ]
    return message(
        "challenge", author=h.standin.bot_user, where=GUILD, components=[{"type": 1, "components": buttons}],
        interaction={"id": str(challenge_id), "type": 2, "name": "challenge", "user": ALICE.user()},
    )  # fmt: skip


async def view_stored(h: BotHarness, custom_id: str) -> None:
    """Wait until discord.py has stored the view it sent: that happens once the response's HTTP
    call returns, a moment after the stand-in saw the request."""
    store = h.bot._connection._view_store
    for _ in range(200):
        if any((2, custom_id) in items for items in store._views.values()):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no view with {custom_id} was stored")


async def answer_to(h: BotHarness, payload: dict[str, Any]) -> Any:
    """Dispatch ``payload`` and return its response, without waiting for other commands to end."""
    response = h.standin.expect_response(int(payload["id"]))
    dispatch(h.bot, payload)
    return await asyncio.wait_for(asyncio.shield(response), 10)


async def test_challenge_buttons_are_logged_beside_the_command(outbox_path: Path) -> None:
    async with running_bot(outbox_path) as h:
        challenge = h.payload("challenge", user_option("opponent", BOB))
        answered = h.standin.expect_response(int(challenge["id"]))

        dispatch(h.bot, challenge)
        await asyncio.wait_for(answered, 10)
        await view_stored(h, "challenge:accept")
        carrier = challenge_message(h, int(challenge["id"]))
        app = h.standin.application_id
        wrong = await answer_to(h, component("challenge:accept", player=ALICE, where=GUILD, application_id=app, message=carrier))
        right = await answer_to(h, component("challenge:accept", player=BOB, where=GUILD, application_id=app, message=carrier))
        await h.settle()  # the challenge sends its follow-up and ends
        rows = await h.rows()
    assert "not yours" in (wrong.content or "") and right.content == "Accepted."
    assert [(r["command"], r["kind"], r["discord_uid"], r["outcome"]) for r in rows] == [
        ("challenge:accept", "component", ALICE.id, "check_failure"),  # refused by the view's interaction_check
        ("challenge:accept", "component", BOB.id, "ok"),
        ("challenge", "slash", ALICE.id, "ok"),  # ends once answered: the follow-up went out
    ]
    assert rows[2]["options"] == {"opponent": BOB.id}


async def test_run_logs_a_command_still_waiting_at_sigterm_as_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "events.db"
    async with DiscordStandIn(valid_token="tok") as standin:
        with pointed_at(standin.base, gateway=standin.gateway):
            task = asyncio.create_task(run_bot(RunConfig(token="tok", outbox_path=path)))
            try:
                await asyncio.wait_for(standin.identified.wait(), 30)
                payload = slash(
                    "challenge", user_option("opponent", BOB), player=ALICE, where=GUILD,
                    application_id=standin.application_id,
                )  # fmt: skip
                answered = standin.expect_response(int(payload["id"]))
                await standin.send_event("INTERACTION_CREATE", payload)
                exchange = await asyncio.wait_for(answered, 10)
                assert "challenges you" in (exchange.content or "")
                os.kill(os.getpid(), signal.SIGTERM)  # run_bot's handler closes the bot
                await asyncio.wait_for(task, 30)
            finally:
                if not task.done():
                    task.cancel()
                    await asyncio.wait([task], timeout=10)
            for leftover in [t for t in asyncio.all_tasks() if t.get_name() == "CommandTree-invoker"]:
                leftover.cancel()  # the challenge, still waiting: asyncio.run would cancel it at exit
                await asyncio.wait([leftover], timeout=10)
    assert task.exception() is None
    rows = await outbox_rows(path)
    assert [(r["command"], r["kind"], r["outcome"]) for r in rows] == [("challenge", "slash", "interrupted")]
    assert rows[0]["application_id"] == standin.application_id
