"""The commands that talk to Postgres (replay, verify, shipper run/drain/migrate), against a real one."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest

from cli_support import Cli, Outcome, fill, mark_shipped, rows_in, run, script_path, with_password
from shipper import SCHEMA_VERSION

UNREACHABLE = "postgresql://u:s3cret@127.0.0.1:1/db"
MALFORMED = "postgresql://u:s3cret@127.0.0.1:notaport/db"


@pytest.fixture(params=["runner", "script"])
def cli(request: pytest.FixtureRequest, subprocess_env: dict[str, str]) -> Cli:
    """Each test runs once through click's CliRunner and once through the installed console script."""
    return Cli(request.param, subprocess_env)


async def execute(dsn: str, sql: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.execute(sql))
    finally:
        await conn.close()


def test_migrate_creates_the_tables_and_can_run_again(cli: Cli, pg_dsn: str) -> None:
    dsn, secret = with_password(pg_dsn)
    for _ in range(2):
        out = cli("shipper", "migrate", "--dsn", dsn)
        assert out.code == 0, out.stderr
        assert f"outbox schema at version {SCHEMA_VERSION} in schema public on postgresql://" in out.stdout
        assert ":***@" in out.stdout
        assert secret not in out.stdout + out.stderr
    assert run(rows_in(pg_dsn, "outbox_events")) == set() and run(rows_in(pg_dsn, "command_calls")) == set()


def test_export_import_into_a_new_outbox_then_drain_ships_every_event_once(
    cli: Cli, tmp_path: Path, pg_dsn: str, route_dsn: Callable[[str], str]
) -> None:
    ship = route_dsn(pg_dsn)  # direct, and through PgBouncer in transaction mode
    first, second = tmp_path / "first.db", tmp_path / "second.db"
    clicks = run(fill(first, 40, "clicks"))
    commands = run(fill(first, 10, "command_calls", discord_uid=7, command="queue"))
    dump = tmp_path / "events.jsonl"
    assert cli("outbox", "export", str(first), "-o", str(dump)).code == 0
    assert "imported 50 events" in cli("outbox", "import", str(second), str(dump)).stdout

    drained = cli("shipper", "drain", "--outbox", str(second), env={"OUTBOX_DSN": ship})
    assert drained.code == 0, drained.stderr
    assert drained.stdout.startswith("shipped 50 events to ")
    assert run(rows_in(pg_dsn, "outbox_events")) == set(clicks)
    assert run(rows_in(pg_dsn, "command_calls")) == set(commands)
    status = json.loads(cli("outbox", "status", str(second), "--json").stdout)
    assert (status["pending"], status["shipped"], status["dead"]) == (0, 50, 0)

    again = cli("shipper", "drain", "--outbox", str(second), "--dsn", ship, "--json")
    assert json.loads(again.stdout) == {"shipped": 0, "pending": 0, "dead": 0, "refused": 0, "retries": 0, "timed_out": False}
    # importing the same events into yet another outbox and shipping them adds no duplicates
    third = tmp_path / "third.db"
    cli("outbox", "import", str(third), str(dump))
    assert cli("shipper", "drain", "--outbox", str(third), "--dsn", ship).code == 0
    assert len(run(rows_in(pg_dsn, "outbox_events"))) == 40 and len(run(rows_in(pg_dsn, "command_calls"))) == 10


def test_verify_reports_rows_lost_in_postgres_and_replay_restores_them(
    cli: Cli, outbox_path: Path, pg_dsn: str, route_dsn: Callable[[str], str]
) -> None:
    ship = route_dsn(pg_dsn)  # direct, and through PgBouncer in transaction mode
    clicks = run(fill(outbox_path, 30, "clicks"))
    commands = run(fill(outbox_path, 5, "command_calls", discord_uid=9, command="rank"))
    path = str(outbox_path)
    assert cli("shipper", "drain", "--outbox", path, env={"DATABASE_URL": ship}).code == 0  # the fallback variable
    ok = cli("outbox", "verify", path, "--dsn", ship)
    assert ok.code == 0 and "checked 35 shipped events" in ok.stdout and "all present" in ok.stdout

    lost = set(clicks[3:10]) | set(commands[:2])  # Postgres restored to a backup without these
    run(execute(pg_dsn, "DELETE FROM outbox_events WHERE id IN (%s)" % ",".join(f"'{i}'" for i in clicks[3:10])))
    run(execute(pg_dsn, "DELETE FROM command_calls WHERE id IN (%s)" % ",".join(f"'{i}'" for i in commands[:2])))
    missing = cli("outbox", "verify", path, "--dsn", ship)
    missing.assert_one_error_line(1, "9 shipped events are missing from Postgres", "outbox replay")
    assert "9 missing" in missing.stdout
    assert "clicks  7 missing" in missing.stdout and "command_calls  2 missing" in missing.stdout
    report = json.loads(cli("outbox", "verify", path, "--json", env={"OUTBOX_DSN": ship}).stdout)
    assert report["missing"] == {"clicks": 7, "command_calls": 2} and set(report["missing_ids"]) == lost
    assert report["ok"] is False and report["checked"] == 35

    dry = cli("outbox", "replay", path, "--dsn", ship, "--dry-run")
    assert dry.code == 0 and "would send 35 events" in dry.stdout and "clicks  30" in dry.stdout
    assert len(run(rows_in(pg_dsn, "outbox_events"))) == 23  # a dry run sends nothing

    only = json.loads(cli("outbox", "replay", path, "--dsn", ship, "--topic", "command_calls", "--json").stdout)
    assert only["selected"] == 5 and only["by_topic"] == {"command_calls": 5} and only["refused"] == 0
    assert run(rows_in(pg_dsn, "command_calls")) == set(commands)
    replayed = cli("outbox", "replay", path, "--dsn", ship, "--since", "1h", "--until", "now")
    assert replayed.code == 0 and "replayed 35 events" in replayed.stdout
    assert run(rows_in(pg_dsn, "outbox_events")) == set(clicks)
    assert cli("outbox", "verify", path, "--dsn", ship).code == 0
    twice = cli("outbox", "replay", path, "--dsn", ship)  # idempotent: nothing doubles
    assert twice.code == 0 and len(run(rows_in(pg_dsn, "outbox_events"))) == 30


def test_verify_on_a_database_without_the_tables_says_to_migrate(cli: Cli, outbox_path: Path, pg_dsn: str) -> None:
    run(fill(outbox_path, 2))
    cli("outbox", "dead", "list", str(outbox_path))
    run(mark_shipped(outbox_path))
    cli("outbox", "verify", str(outbox_path), "--dsn", pg_dsn).assert_one_error_line(4, "shipper migrate")


POSTGRES_COMMANDS = [
    ["outbox", "verify", "{box}", "--dsn", "{dsn}"],
    ["outbox", "replay", "{box}", "--dsn", "{dsn}"],
    ["shipper", "drain", "--outbox", "{box}", "--dsn", "{dsn}"],
    ["shipper", "migrate", "--dsn", "{dsn}"],
    ["shipper", "run", "--outbox", "{box}", "--dsn", "{dsn}"],
]


PROBLEMS = {
    "unreachable": (UNREACHABLE, ["cannot reach Postgres at postgresql://u:***@127.0.0.1:1/db"]),
    "malformed": (MALFORMED, ["malformed DSN"]),
}
CASES = [
    (problem, command)
    for problem in PROBLEMS
    for command in POSTGRES_COMMANDS
    if not (command[1] == "run" and problem == "unreachable")  # the sidecar waits: tested with SIGINT below
]


@pytest.mark.parametrize(("problem", "command"), CASES, ids=[f"{p}-{' '.join(c[:2])}" for p, c in CASES])
def test_postgres_problems_are_one_line_exit_4_and_never_show_the_password(
    cli: Cli, outbox_path: Path, problem: str, command: list[str]
) -> None:
    dsn, words = PROBLEMS[problem]
    run(fill(outbox_path, 3))
    run(mark_shipped(outbox_path))
    tool, *args = [part.format(box=outbox_path, dsn=dsn) for part in command]
    out = cli(tool, *args)
    if command[1] == "run":  # the sidecar logs (one line per record) before it gives up
        *logged, last = out.err_lines
        assert all(" shipper." in x for x in logged), logged
        out = Outcome(out.code, out.stdout, last + "\n")
    out.assert_one_error_line(4, *words, secret="s3cret")
    assert out.stdout == ""


def test_a_dsn_from_the_environment_is_never_shown_either(cli: Cli, outbox_path: Path) -> None:
    run(fill(outbox_path, 1))
    out = cli("outbox", "replay", str(outbox_path), env={"DATABASE_URL": UNREACHABLE})
    out.assert_one_error_line(4, "cannot reach Postgres", secret="s3cret")


async def shipped_count(dsn: str) -> int:
    try:
        return len(await rows_in(dsn, "outbox_events"))
    except asyncpg.UndefinedTableError:  # the shipper has not created its tables yet
        return 0


def _wait_for(predicate: object, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_shipper_run_ships_until_sigterm_then_drains_and_exits_0(
    outbox_path: Path, pg_dsn: str, subprocess_env: dict[str, str]
) -> None:
    dsn, secret = with_password(pg_dsn)
    ids = run(fill(outbox_path, 20))
    proc = subprocess.Popen(
        [str(script_path("shipper")), "run", "--outbox", str(outbox_path), "--dsn", dsn, "--log-format", "json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env,
    )
    try:
        _wait_for(lambda: run(shipped_count(pg_dsn)) == 20)
        ids += run(fill(outbox_path, 300))
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert run(rows_in(pg_dsn, "outbox_events")) == set(ids)
    lines = [json.loads(x) for x in err.decode().splitlines()]  # every log line is one JSON object
    messages = [x["message"] for x in lines]
    assert any(m.startswith("shipping ") and ":***@" in m for m in messages), messages
    assert any("SIGTERM received" in m for m in messages)
    assert messages[-1].startswith("stopped: shipped 320 events")
    assert secret not in (out + err).decode()


def test_shipper_run_waits_out_an_unreachable_postgres_and_still_stops_on_sigterm(
    outbox_path: Path, subprocess_env: dict[str, str]
) -> None:
    run(fill(outbox_path, 2))
    proc = subprocess.Popen(
        [str(script_path("shipper")), "run", "--outbox", str(outbox_path), "--dsn", UNREACHABLE, "--stop-timeout", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env,
    )
    try:
        assert proc.stderr is not None
        seen = b""
        while b"failed" not in seen:
            chunk = proc.stderr.readline()
            assert chunk, "the shipper exited before reporting the outage"
            seen += chunk
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    text = (seen + err).decode()
    assert proc.returncode == 0, text
    assert "cannot reach Postgres at postgresql://u:***@127.0.0.1:1/db" in text
    assert "s3cret" not in text and "Traceback" not in text
    assert "still pending; they stay in the outbox" in text


def test_a_busy_metrics_port_is_one_clear_line(cli: Cli, outbox_path: Path, pg_dsn: str) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        out = cli("shipper", "run", "--outbox", str(outbox_path), "--dsn", pg_dsn, "--metrics-port", str(port))
    out.assert_one_error_line(1, f"cannot serve metrics on 127.0.0.1:{port}")
