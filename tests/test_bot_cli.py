"""``python -m bot``: simulate as a real subprocess, and run's one-line errors."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import pytest
from click.testing import CliRunner

from bot.cli import main
from bot.payloads import slash, subcommand
from bot.runner import RunConfig, run_bot
from bot.standin import DiscordStandIn, pointed_at
from discord_harness import ALICE, GUILD, outbox_rows

TIMEOUT = 120


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], env=env, capture_output=True, text=True, timeout=TIMEOUT
    )


async def test_simulate_subprocess_logs_and_ships_every_command(
    tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str]
) -> None:
    path = tmp_path / "sim.db"
    args = ["simulate", "--commands", "40", "--outbox", str(path), "--dsn", pg_dsn, "--warmup", "5", "--block", "10"]
    proc = await asyncio.to_thread(run_cli, args, subprocess_env)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    out = proc.stdout
    assert "logging off" in out and "logging on" in out and "overhead (on - off)" in out
    assert "outbox: 40 new command_calls rows" in out
    assert "postgres: 40 new rows in table command_calls" in out
    rows = await outbox_rows(path)
    assert len(rows) == 40
    assert {r["command"] for r in rows} >= {"leaderboard", "profile", "queue join"}
    assert any(r["guild_id"] is None for r in rows) and any(r["guild_id"] is not None for r in rows)
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM command_calls") == 40
        assert await conn.fetchval("SELECT count(DISTINCT discord_uid) FROM command_calls") > 1
    finally:
        await conn.close()


def test_run_without_a_token_is_one_clean_line(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    env = {k: v for k, v in subprocess_env.items() if k != "DISCORD_TOKEN"}
    env["OUTBOX_PATH"] = str(tmp_path / "events.db")
    proc = run_cli(["run"], env)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "DISCORD_TOKEN is not set" in lines[0]
    assert not (tmp_path / "events.db").exists()  # nothing started


@contextmanager
def standin_in_thread(valid_token: str) -> Iterator[DiscordStandIn]:
    """A stand-in on a loop of its own, so a CLI running ``asyncio.run`` can reach it."""
    loop = asyncio.new_event_loop()
    standin = DiscordStandIn(valid_token=valid_token)
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(standin.start(), loop).result(10)
        yield standin
    finally:
        asyncio.run_coroutine_threadsafe(standin.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def test_run_with_a_rejected_token_is_one_clean_line(tmp_path: Path) -> None:
    with standin_in_thread(valid_token="the-real-one") as standin, pointed_at(standin.base):
        env = {"DISCORD_TOKEN": "a-stale-one", "OUTBOX_PATH": str(tmp_path / "e.db"), "OUTBOX_DSN": None}
        result = CliRunner().invoke(main, ["run", "--log-level", "ERROR"], env={**env, "DATABASE_URL": None})
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert result.output.strip().splitlines() == [
        "bot: error: Discord rejected the token in DISCORD_TOKEN (401 Unauthorized); copy it again from the developer portal"
    ]
    assert "a-stale-one" not in result.output


def test_help_teaches_every_command() -> None:
    runner = CliRunner()
    top = runner.invoke(main, ["--help"])
    assert top.exit_code == 0 and all(c in top.output for c in ("run", "simulate", "demo"))
    run_help = runner.invoke(main, ["run", "--help"])
    assert "DISCORD_TOKEN" in run_help.output and "OUTBOX_PATH" in run_help.output and "OUTBOX_DSN" in run_help.output


async def test_run_ships_in_process_and_stops_on_sigterm(
    tmp_path: Path, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    await serve_one_command(tmp_path, pg_dsn, caplog)


async def test_run_without_a_dsn_leaves_shipping_to_a_sidecar(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    await serve_one_command(tmp_path, None, caplog)


async def serve_one_command(tmp_path: Path, dsn: str | None, caplog: pytest.LogCaptureFixture) -> None:
    """``run``'s own code path: log in, identify on a gateway, answer, ship (or not), SIGTERM, exit."""
    caplog.set_level(logging.INFO)
    path = tmp_path / "events.db"
    in_process = dsn is not None
    async with DiscordStandIn(valid_token="tok") as standin:
        with pointed_at(standin.base, gateway=standin.gateway):
            task = asyncio.create_task(run_bot(RunConfig(token="tok", outbox_path=path, dsn=dsn)))
            try:
                await asyncio.wait_for(standin.identified.wait(), 30)
                payload = slash(
                    "queue", subcommand("status"), player=ALICE, where=GUILD, application_id=standin.application_id
                )
                answered = standin.expect_response(int(payload["id"]))
                await standin.send_event("INTERACTION_CREATE", payload)
                exchange = await asyncio.wait_for(answered, 10)
                assert "Queued now" in (exchange.content or "")
                if dsn is not None:
                    assert await _shipped_row(dsn) == (ALICE.id, "queue status", "ok")
                os.kill(os.getpid(), signal.SIGTERM)  # run_bot's handler closes the bot
                await asyncio.wait_for(task, 30)
            finally:
                if not task.done():
                    task.cancel()
                    await asyncio.wait([task], timeout=10)
    assert task.exception() is None
    assert [r["command"] for r in await outbox_rows(path)] == ["queue status"]
    said_sidecar = [r.getMessage() for r in caplog.records if "sidecar" in r.getMessage()]
    if in_process:
        assert said_sidecar == []
    else:
        assert len(said_sidecar) == 1 and "OUTBOX_DSN" in said_sidecar[0] and str(path) in said_sidecar[0]


async def _shipped_row(dsn: str) -> tuple[object, ...] | None:
    """Wait (up to 10 s) for the one row the in-process shipper should deliver while the bot runs."""
    conn = await asyncpg.connect(dsn)
    try:
        for _ in range(200):
            if await _count(conn) == 1:
                row = await conn.fetchrow("SELECT discord_uid, command, outcome FROM command_calls")
                return tuple(row)
            await asyncio.sleep(0.05)
        return None
    finally:
        await conn.close()


async def _count(conn: asyncpg.Connection) -> int:
    try:
        return int(await conn.fetchval("SELECT count(*) FROM command_calls"))
    except asyncpg.UndefinedTableError:
        return 0  # the shipper has not migrated yet


def test_simulate_with_an_unreachable_dsn_fails_fast_on_one_line(tmp_path: Path) -> None:
    dsn = "postgresql://ladder:hunter2@127.0.0.1:1/ladder"
    result = CliRunner().invoke(
        main, ["simulate", "--commands", "5", "--warmup", "0", "--outbox", str(tmp_path / "e.db"), "--dsn", dsn]
    )
    assert result.exit_code == 4  # Postgres, as for the outbox and shipper tools
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bot: error: cannot reach Postgres"), result.output
    assert "hunter2" not in result.output and "ladder:***@" in result.output
