"""A failing outbox never breaks a command: it still answers, and the failure is logged loudly."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from bot.payloads import option, subcommand
from discord_harness import running_bot

LOGGER = "discord_outbox.commandlog"


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == LOGGER and r.levelno >= logging.ERROR]


async def test_closed_outbox_command_still_answers(outbox_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_bot(outbox_path) as h:
        await h.invoke("leaderboard")
        await h.outbox.close()
        sent = await h.invoke("leaderboard", option("page", 2))
        failed = await h.invoke("queue", subcommand("join"))  # a failing command, failing log too
        stats = h.command_log.stats
    assert sent and "page 2" in (sent[0].content or "")
    assert failed and "accept the rules" in (failed[0].content or "")
    assert stats.logged == 1 and stats.failed == 2
    assert stats.last_error is not None and "OutboxClosedError" in stats.last_error
    logged = errors(caplog)
    assert len(logged) == 1  # rate-limited: the second failure within the interval is counted, not shown
    assert "/leaderboard answered but was not logged" in logged[0].getMessage()
    assert "closed" in logged[0].getMessage()


async def test_full_outbox_command_still_answers(outbox_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with running_bot(outbox_path, max_bytes=1) as h:
        sent = await h.invoke("termsofservice")
        stats = h.command_log.stats
        rows = await h.rows()
    assert sent and sent[0].ephemeral and "Accepted" in (sent[0].content or "")
    assert rows == [] and stats.failed == 1 and stats.logged == 0
    logged = errors(caplog)
    assert len(logged) == 1 and "is full" in logged[0].getMessage()
    assert "/termsofservice answered but was not logged" in logged[0].getMessage()


async def test_failures_are_reported_again_after_the_interval(
    outbox_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_bot(outbox_path) as h:
        h.command_log.error_interval_s = 0.0
        await h.outbox.close()
        for _ in range(3):
            assert await h.invoke("leaderboard")
    assert len(errors(caplog)) == 3
