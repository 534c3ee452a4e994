"""The command lines' shared pieces: times, secrets, error translation, log lines."""

from __future__ import annotations

import json
from typing import Any
import logging
from datetime import datetime, timezone

import click
import pytest
from click.testing import CliRunner

from outbox.clitools import (
    EXIT_FAILURE,
    EXIT_OUTBOX,
    EXIT_USAGE,
    CliGroup,
    parse_duration,
    parse_time,
    scrub_secrets,
)
from outbox.clilog import log_to_stderr
from outbox.errors import NotAnOutboxError, OutboxError
from outbox.report import human_age, human_bytes

NOW = 1_700_000_000_000_000


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("15m", 900), ("2h", 7200), ("7d", 7 * 86400), ("1w", 7 * 86400), ("1h30m", 5400), ("1.5h", 5400)],
)
def test_relative_times_mean_that_long_ago(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds
    assert parse_time(text, now_us=NOW) == NOW - seconds * 1_000_000
    assert parse_time(f"{text} ago", now_us=NOW) == NOW - seconds * 1_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-05-01T12:00:00Z", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),
        ("2024-05-01T12:00:00+02:00", datetime(2024, 5, 1, 10, tzinfo=timezone.utc)),
        ("2024-05-01 12:00", datetime(2024, 5, 1, 12, tzinfo=timezone.utc)),  # no zone: UTC
        ("2024-05-01", datetime(2024, 5, 1, tzinfo=timezone.utc)),
    ],
)
def test_iso_times(text: str, expected: datetime) -> None:
    assert parse_time(text, now_us=NOW) == int(expected.timestamp() * 1_000_000)


def test_now_and_bad_times() -> None:
    assert parse_time("now", now_us=NOW) == NOW
    for bad, why in [("3x", "not a time"), ("", "empty"), ("yesterday", "not a time"), ("2024-13-01", "not a time")]:
        with pytest.raises(ValueError, match=why):
            parse_time(bad, now_us=NOW)
    with pytest.raises(ValueError, match="needs a unit"):
        parse_duration("15")


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("cannot reach postgresql://bot:s3cret@db:5432/x: refused", "postgresql://bot:***@db:5432/x"),
        ("dsn postgres://u:p%40ss@h/db?sslmode=require", "postgres://u:***@h/db?sslmode=require"),
        ("host=db user=bot password=s3cret dbname=x", "password=*** dbname=x"),
        ("host=db password='s3 cret' dbname=x", "password=*** dbname=x"),
        ("postgresql://h/db?user=u&password=s3cret&x=1", "password=***&x=1"),
        # typos a parser rejects, and its message then quotes verbatim (issue 13)
        ("Postgres at postgresql:/u:s3cret@127.0.0.1/x refused", "postgresql:/u:***@127.0.0.1/x"),
        ("malformed DSN u:s3cret@host:1/x: invalid DSN", "u:***@host:1/x"),
        ("malformed DSN postgres//u:s3cret@127.0.0.1/x", "postgres//u:***@127.0.0.1/x"),
        ('database "u:s3cret@127.0.0.1/x" does not exist', '"u:***@127.0.0.1/x"'),
        ("dsn=postgresql://u:s3cret@h/x", "dsn=postgresql://u:***@h/x"),
        ("postgresql://u:s3cret@evil@h/x", "postgresql://u:***@h/x"),
    ],
)
def test_secrets_are_scrubbed_from_any_text(text: str, shown: str) -> None:
    scrubbed = scrub_secrets(text)
    assert shown in scrubbed
    assert "s3cret" not in scrubbed and "s3 cret" not in scrubbed and "p%40ss" not in scrubbed


def test_scrubbing_leaves_urls_without_passwords_alone() -> None:
    text = "see https://example.org/a:b and postgresql://bot@db/x, postgresql://db:5432/x at 12:30:00 by a@b.org"
    assert scrub_secrets(text) == text


def test_human_sizes_and_ages() -> None:
    assert [human_bytes(n) for n in (5, 2048, 3 * 1024 * 1024, 5 * 1024**3)] == ["5 B", "2.0 KiB", "3.0 MiB", "5.0 GiB"]
    assert [human_age(s) for s in (4.25, 45, 200, 7300, 190000)] == ["4.2s", "45s", "3m 20s", "2h 1m", "2d 4h"]


def _group() -> CliGroup:
    @click.group(cls=CliGroup, name="demo")
    def demo() -> None:
        """Demo."""

    @demo.command()
    @click.argument("what")
    def fail(what: str) -> None:
        """Raise something."""
        if what == "outbox":
            raise NotAnOutboxError("x.db is a SQLite database but not an outbox")
        if what == "oserror":
            raise FileNotFoundError(2, "No such file or directory", "in.jsonl")
        if what == "secret":
            raise RuntimeError("boom at postgresql://u:s3cret@h/db\nsecond line")
        if what == "code":
            raise click.exceptions.Exit(7)

    assert isinstance(demo, CliGroup)
    demo.register_error(OutboxError, EXIT_OUTBOX)
    demo.register_error(OSError, EXIT_OUTBOX)
    return demo


@pytest.mark.parametrize(
    ("args", "code", "line"),
    [
        (["fail", "outbox"], EXIT_OUTBOX, "demo: error: x.db is a SQLite database but not an outbox"),
        (["fail", "oserror"], EXIT_OUTBOX, "demo: error: in.jsonl: No such file or directory"),
        (["fail", "secret"], EXIT_FAILURE, "demo: error: unexpected RuntimeError: boom at postgresql://u:***@h/db; second line"),
        (["fail"], EXIT_USAGE, "demo: error: Missing argument 'WHAT'. (see 'demo fail --help')"),
        (["nope"], EXIT_USAGE, "demo: error: No such command 'nope'. (see 'demo --help')"),
    ],
)
def test_every_error_becomes_one_line_and_an_exit_code(args: list[str], code: int, line: str) -> None:
    result = CliRunner().invoke(_group(), args, catch_exceptions=False)
    assert result.exit_code == code
    assert result.stderr.splitlines() == [line]
    assert "Traceback" not in result.output


def test_explicit_exit_codes_pass_through() -> None:
    assert CliRunner().invoke(_group(), ["fail", "code"]).exit_code == 7
    assert _group().main(["fail", "code"], standalone_mode=False) == 7


def test_log_lines_are_one_line_json_without_passwords_or_tracebacks(capsys: pytest.CaptureFixture[str]) -> None:
    log = logging.getLogger("test.cli")
    with log_to_stderr("info", "json"):
        try:
            raise ConnectionError("refused by postgresql://u:s3cret@h/db")
        except ConnectionError:
            log.exception("shipping to %s failed", "postgresql://u:s3cret@h/db", extra={"batch": 3})
        log.debug("hidden")
    with log_to_stderr("info", "text"):
        log.info("plain %d", 1, extra={"outbox": "x.db"})
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2
    record = json.loads(lines[0])
    assert record["level"] == "error" and record["logger"] == "test.cli" and record["batch"] == 3
    assert "ConnectionError" in record["message"] and "postgresql://u:***@h/db" in record["message"]
    assert "s3cret" not in lines[0] and "Traceback" not in lines[0]
    assert lines[1].endswith("INFO    test.cli: plain 1 outbox=x.db")


def test_an_interrupt_before_a_command_starts_leaves_no_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C can land after a command's coroutine is made but before asyncio.run starts it (CI
    saw it once on 3.13, in `outbox export`; here the runner raises it before running the
    coroutine): the coroutine must be closed, or Python prints
    "coroutine was never awaited" under the CLI's one line."""
    import asyncio
    import gc
    import warnings

    from outbox import clitools

    async def command() -> int:
        return 0

    def interrupted(self: Any, coro: Any, **_: Any) -> Any:
        raise KeyboardInterrupt

    monkeypatch.setattr(asyncio.Runner, "run", interrupted)
    coro = command()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(KeyboardInterrupt):
            clitools.run(coro)
        del coro
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)], [str(w.message) for w in caught]


def test_an_interrupt_while_the_loop_is_made_prints_nothing_more(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C can land while asyncio builds the command's event loop (CI saw it on 3.11, in
    `outbox export`): the half-built loop's ``__del__`` raised AttributeError ('_ssock') and
    Python printed "Exception ignored" and a traceback under the CLI's one line. Here the
    signal is sent from inside the loop's constructor, as a real Ctrl-C would land."""
    import asyncio.selector_events as selector_events
    import gc
    import os
    import signal
    import sys

    from outbox import clitools

    original = selector_events.BaseSelectorEventLoop._make_self_pipe  # type: ignore[attr-defined]

    def sigint_midway(self: Any) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # handled at the next bytecode, unless held back
        original(self)

    monkeypatch.setattr(selector_events.BaseSelectorEventLoop, "_make_self_pipe", sigint_midway)
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)

    async def command() -> int:
        return 0

    with pytest.raises(KeyboardInterrupt):
        clitools.run(command())
    gc.collect()
    assert not unraisable, [f"{u.exc_type.__name__}: {u.exc_value}" for u in unraisable]
