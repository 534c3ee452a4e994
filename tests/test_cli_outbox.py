"""``outbox`` local commands (status, export, import, dead, prune), in process and as the real script."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
import uuid
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cli_support import GROUPS, Cli, Outcome, fill, mark_shipped, on_a_terminal, run, script_path
from outbox import OutboxReader, uuid7

CONTRACT_KEYS = {"pending", "shipped", "dead", "oldest_pending_age_s", "bytes"}


@pytest.fixture(params=["runner", "script"])
def cli(request: pytest.FixtureRequest, subprocess_env: dict[str, str]) -> Cli:
    """Each test runs once through click's CliRunner and once through the installed console script."""
    return Cli(request.param, subprocess_env)


def records(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines()]


def line(topic: str = "t", created_at: str | None = None, **payload: object) -> bytes:
    record: dict[str, object] = {"id": uuid7(), "topic": topic, "payload": payload or {"x": 1}}
    if created_at is not None:
        record["created_at"] = created_at
    return json.dumps(record).encode() + b"\n"


async def events_in(path: Path) -> list[tuple[str, str, str, int]]:
    async with OutboxReader(path) as reader:
        return [
            (e.id, e.topic, e.payload, e.created_at) async for chunk in reader.iter_events() for e in chunk
        ]


# -- status --------------------------------------------------------------------------------------


def test_status_shows_counts_per_topic_for_people_and_stable_json_for_scripts(cli: Cli, outbox_path: Path) -> None:
    run(fill(outbox_path, 5, "clicks"))
    run(fill(outbox_path, 2, "command_calls", discord_uid=1, command="q"))
    run(mark_shipped(outbox_path, 3))
    table = cli("outbox", "status", str(outbox_path))
    assert table.code == 0 and table.stderr == ""
    assert "pending  4" in table.stdout and "shipped  3" in table.stdout and "dead     0" in table.stdout
    assert "oldest" in table.stdout and "last shipping error: none" in table.stdout
    topic_rows = {ln.split()[0]: ln.split()[1:] for ln in table.stdout.splitlines()[-2:]}
    assert topic_rows == {"clicks": ["2", "3", "0"], "command_calls": ["2", "0", "0"]}

    out = cli("outbox", "status", str(outbox_path), "--json")
    assert out.code == 0
    data = json.loads(out.stdout)
    assert CONTRACT_KEYS <= set(data)
    assert (data["pending"], data["shipped"], data["dead"]) == (4, 3, 0)
    assert isinstance(data["oldest_pending_age_s"], float) and data["bytes"] > 0
    assert data["topics"]["clicks"] == {"pending": 2, "shipped": 3, "dead": 0}


def test_status_reads_outbox_path_from_the_environment(cli: Cli, outbox_path: Path) -> None:
    run(fill(outbox_path, 2))
    run(mark_shipped(outbox_path))
    out = cli("outbox", "status", "--json", "--no-topics", env={"OUTBOX_PATH": str(outbox_path)})
    data = json.loads(out.stdout)
    assert (data["pending"], data["shipped"], data["oldest_pending_age_s"], data["topics"]) == (0, 2, None, {})


# -- export / import -----------------------------------------------------------------------------


def test_export_import_round_trip_keeps_ids_and_adds_nothing_twice(cli: Cli, tmp_path: Path) -> None:
    source, copy, piped = tmp_path / "a.db", tmp_path / "b.db", tmp_path / "c.db"
    ids = run(fill(source, 30, "clicks", text="héllo ✓"))
    ids += run(fill(source, 5, "command_calls", discord_uid=2**60, command="queue"))
    run(mark_shipped(source, 20))

    exported = cli("outbox", "export", str(source))
    assert exported.code == 0 and exported.stderr == ""
    lines = [json.loads(x) for x in exported.stdout.splitlines()]
    assert [r["id"] for r in lines] == ids
    assert {"id", "topic", "payload", "created_at"} <= set(lines[0])
    assert [r["status"] for r in lines].count("shipped") == 20 and lines[-1]["status"] == "pending"
    assert lines[0]["payload"] == {"i": 0, "text": "héllo ✓"}

    dump = tmp_path / "events.jsonl"
    to_file = cli("outbox", "export", str(source), "-o", str(dump))
    assert to_file.code == 0 and to_file.stdout == "" and "exported 35 events" in to_file.stderr
    assert records(dump) == lines

    first = cli("outbox", "import", str(copy), str(dump))
    assert first.code == 0, first.stderr
    assert "imported 35 events" in first.stdout and "0 already present" in first.stdout
    assert run(events_in(copy)) == run(events_in(source))  # ids, topics, payloads, times
    again = cli("outbox", "import", str(copy), str(dump), "--json")
    assert json.loads(again.stdout) == {"added": 0, "already_present": 35, "skipped": []}

    from_stdin = cli("outbox", "import", str(piped), "-", input=dump.read_bytes())
    assert from_stdin.code == 0 and "imported 35 events" in from_stdin.stdout
    status = json.loads(cli("outbox", "status", str(copy), "--json").stdout)
    assert (status["pending"], status["shipped"]) == (35, 0)  # imported events wait for the shipper


def test_export_calls_a_dead_letter_sent_for_retry_pending_as_status_does(cli: Cli, tmp_path: Path) -> None:
    """`outbox dead retry` makes a dead letter pending again: `outbox status` counts it pending,
    and export must say the same (it said "dead")."""
    box = tmp_path / "a.db"
    ids = run(fill(box, 3, "clicks"))

    async def set_aside_and_retry() -> None:
        async with OutboxReader(box) as reader:
            events = await reader.read_pending(10)
            await reader.set_aside([(events[0], "refused"), (events[1], "refused")])
            assert await reader.retry_dead(ids=[ids[0]]) == 1

    run(set_aside_and_retry())
    exported = cli("outbox", "export", str(box))
    assert exported.code == 0, exported.stderr
    status = {r["id"]: r["status"] for r in map(json.loads, exported.stdout.splitlines())}
    assert status == {ids[0]: "pending", ids[1]: "dead", ids[2]: "pending"}
    counts = json.loads(cli("outbox", "status", str(box), "--json").stdout)
    assert (counts["pending"], counts["dead"]) == (2, 1)


def test_export_selects_by_time_and_topic(cli: Cli, tmp_path: Path) -> None:
    now = time.time()
    at = {age: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now - age * 86400)) for age in (5, 2, 0.04)}
    dump = tmp_path / "in.jsonl"
    dump.write_bytes(line("a", at[5]) + line("a", at[2]) + line("b", at[2]) + line("a", at[0.04]))
    box = tmp_path / "box.db"
    assert cli("outbox", "import", str(box), str(dump)).code == 0
    wanted = [json.loads(x)["id"] for x in dump.read_text().splitlines()]

    def ids(*args: str) -> list[str]:
        out = cli("outbox", "export", str(box), *args)
        assert out.code == 0, out.stderr
        return [json.loads(x)["id"] for x in out.stdout.splitlines()]

    assert ids("--since", "3d", "--until", "1d") == wanted[1:3]
    assert ids("--since", "3d", "--until", "1d", "--topic", "b") == [wanted[2]]
    assert ids("--since", at[2]) == wanted[1:]
    assert ids("--until", "2h ago", "--topic", "a") == wanted[:2]


BAD_LINES = {
    "json": (b'{"id": "x", \n', "not valid JSON"),
    "utf8": (b'{"id": "\xff\xfe"}\n', "not valid UTF-8"),
    "nan": (b'{"id": "' + uuid7().encode() + b'", "topic": "t", "payload": {"x": NaN}}\n', "nan at $.x is not valid JSON"),
    "uuid": (b'{"id": "123", "topic": "t", "payload": {}}\n', "not a UUID"),
    "nul": (b'{"id": "' + uuid7().encode() + b'", "topic": "t", "payload": {"x": "a\\u0000"}}\n', "NUL"),
    "huge": (b'{"id": "' + b"x" * 70_000 + b'"}\n', "longer than"),
}


@pytest.mark.parametrize("kind", sorted(BAD_LINES))
def test_a_bad_line_imports_nothing_unless_skip_bad(cli: Cli, tmp_path: Path, kind: str) -> None:
    bad, why = BAD_LINES[kind]
    dump = tmp_path / "in.jsonl"
    dump.write_bytes(line() + bad + line())
    box = tmp_path / "box.db"
    args = ("outbox", "import", str(box), str(dump), "--max-payload-bytes", "100")
    out = cli(*args)
    out.assert_one_error_line(3, "in.jsonl line 2:", why, "nothing was imported")
    assert not box.exists()  # a failed import leaves no outbox behind

    skipped = cli(*args, "--skip-bad")
    assert skipped.code == 0
    assert skipped.err_lines == [ln for ln in skipped.err_lines if ln.startswith("skipped ")]
    assert len(skipped.err_lines) == 1 and "line 2:" in skipped.stderr and why in skipped.stderr
    assert "imported 2 events" in skipped.stdout and "1 bad line skipped" in skipped.stdout
    assert len(run(events_in(box))) == 2


def test_a_truncated_last_line_is_named_as_such(cli: Cli, tmp_path: Path) -> None:
    dump = tmp_path / "cut.jsonl"
    dump.write_bytes(line() + line() + line()[:25])
    out = cli("outbox", "import", str(tmp_path / "box.db"), str(dump))
    out.assert_one_error_line(3, "line 3:", "cut short")
    good_end = tmp_path / "no-newline.jsonl"
    good_end.write_bytes(line() + line().rstrip(b"\n"))  # a last line without newline is fine when whole
    assert "imported 2 events" in cli("outbox", "import", str(tmp_path / "b2.db"), str(good_end)).stdout


def test_import_reads_many_lines_with_blank_lines_and_a_byte_order_mark(cli: Cli, tmp_path: Path) -> None:
    dump = tmp_path / "many.jsonl"
    with dump.open("wb") as f:
        f.write(b"\xef\xbb\xbf")
        for i in range(5000):
            f.write(line(i=i))
            if i % 1000 == 0:
                f.write(b"\n   \n")
    out = cli("outbox", "import", str(tmp_path / "box.db"), str(dump), "--json")
    assert json.loads(out.stdout) == {"added": 5000, "already_present": 0, "skipped": []}


# -- dead letters --------------------------------------------------------------------------------


async def make_dead_letters(path: Path) -> list[str]:
    ids = await fill(path, 4, "clicks") + await fill(path, 2, "junk")
    async with OutboxReader(path) as reader:
        batch = await reader.read_pending(10)
        await reader.set_aside([(batch[1], "bad value"), (batch[4], "junk refused"), (batch[5], "junk refused")])
        await reader.advance(batch[-1].seq)
    return [ids[1], ids[4], ids[5]]


def test_dead_letters_are_listed_retried_and_dropped(cli: Cli, outbox_path: Path) -> None:
    first, junk1, junk2 = run(make_dead_letters(outbox_path))
    path = str(outbox_path)
    listed = json.loads(cli("outbox", "dead", "list", path, "--json").stdout)
    assert [(d["id"], d["topic"], d["error"], d["status"]) for d in listed] == [
        (first, "clicks", "bad value", "dead"),
        (junk1, "junk", "junk refused", "dead"),
        (junk2, "junk", "junk refused", "dead"),
    ]
    table = cli("outbox", "dead", "list", path)
    assert table.code == 0 and first in table.stdout and "3 dead letters" in table.stdout
    assert len(json.loads(cli("outbox", "dead", "list", path, "--topic", "junk", "--json").stdout)) == 2

    stranger = str(uuid.uuid4())
    cli("outbox", "dead", "retry", path, first, stranger).assert_one_error_line(2, stranger, "not a dead letter")
    retried = cli("outbox", "dead", "retry", path, first)
    assert retried.code == 0 and "marked 1 dead letter for retry" in retried.stdout
    by_env = cli("outbox", "dead", "retry", junk1, env={"OUTBOX_PATH": path})  # PATH from the environment
    assert by_env.code == 0 and "marked 1" in by_env.stdout
    statuses = {d["id"]: d["status"] for d in json.loads(cli("outbox", "dead", "list", path, "--json").stdout)}
    assert statuses == {first: "retry", junk1: "retry", junk2: "dead"}

    cli("outbox", "dead", "drop", path).assert_one_error_line(2, "name the dead letters to drop")
    dropped = cli("outbox", "dead", "drop", path, "--topic", "junk")
    assert dropped.code == 0 and "dropped 2 dead letters" in dropped.stdout
    status = json.loads(cli("outbox", "status", path, "--json").stdout)
    assert (status["dead"], status["shipped"], status["pending"]) == (0, 3, 1)  # the retried one is pending again
    assert "no dead letters" in cli("outbox", "dead", "list", path, "--topic", "junk").stdout
    exported = [json.loads(x) for x in cli("outbox", "export", path).stdout.splitlines()]
    assert len(exported) == 4 and {junk1, junk2}.isdisjoint(r["id"] for r in exported)  # dropped: gone
    assert [r["status"] for r in exported if r["id"] == first] == ["pending"]  # as `outbox status` counts it


# -- prune ---------------------------------------------------------------------------------------


def test_prune_deletes_old_shipped_events_and_never_pending_ones(cli: Cli, outbox_path: Path) -> None:
    run(fill(outbox_path, 10))
    run(mark_shipped(outbox_path, 6))
    path = str(outbox_path)
    kept = cli("outbox", "prune", path, "--older-than", "7d")
    assert kept.code == 0 and "pruned 0 events shipped before" in kept.stdout
    pruned = cli("outbox", "prune", path, "--older-than", "0s")
    assert pruned.code == 0 and "pruned 6 events shipped before" in pruned.stdout
    status = json.loads(cli("outbox", "status", path, "--json").stdout)
    assert (status["pending"], status["shipped"]) == (4, 0)


# -- errors --------------------------------------------------------------------------------------


def _not_outbox(tmp_path: Path) -> Path:
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    return path


ERRORS = [
    # (args, with {tmp} and {box} substituted), exit code, words in the one line
    (["status", "{tmp}/missing.db"], 3, ["no outbox at", "missing.db"]),
    (["status", "{tmp}/text.db"], 3, ["text.db", "not a SQLite file"]),
    (["status", "{tmp}/other.sqlite"], 3, ["other.sqlite", "not an outbox"]),
    (["status", "{tmp}"], 3, ["is a directory"]),
    (["status"], 2, ["Missing argument 'PATH'"]),
    (["export", "{box}", "--since", "3x"], 2, ["'--since'", "'3x' is not a time", "15m, 2h, 7d"]),
    (["export", "{box}", "--since", "1d", "--until", "2d"], 2, ["is not before --until"]),
    (["export", "{tmp}/missing.db"], 3, ["no outbox at"]),
    (["import", "{box}", "{tmp}/missing.jsonl"], 3, ["missing.jsonl: No such file or directory"]),
    (["prune", "{box}"], 2, ["Missing option '--older-than'"]),
    (["prune", "{box}", "--older-than", "7"], 2, ["needs a unit"]),
    (["dead", "list", "{tmp}/missing.db"], 3, ["no outbox at"]),
    (["stats", "{box}"], 2, ["No such command 'stats'"]),
    (["replay", "{box}"], 2, ["Missing option '--dsn'"]),
    (["verify", "{box}"], 2, ["Missing option '--dsn'"]),
]


@pytest.mark.parametrize(("args", "code", "words"), ERRORS, ids=[" ".join(e[0][:2]) + f" {i}" for i, e in enumerate(ERRORS)])
def test_each_error_is_one_clear_line_with_its_exit_code(
    cli: Cli, tmp_path: Path, args: list[str], code: int, words: list[str]
) -> None:
    box = tmp_path / "box.db"
    run(fill(box, 1))
    (tmp_path / "text.db").write_text("hello, not a database\n" * 100)
    _not_outbox(tmp_path)
    out = cli("outbox", *[a.format(tmp=tmp_path, box=box) for a in args])
    line_ = out.assert_one_error_line(code, *words)
    assert line_.startswith("outbox: error: ")


def test_running_with_no_command_shows_the_help(cli: Cli) -> None:
    out = cli("outbox")
    assert out.code == 2 and "Usage: outbox" in out.stderr and "Traceback" not in out.stderr


# -- help and progress ---------------------------------------------------------------------------


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found += _commands(command, (*path, name))
        else:
            found.append((*path, name))
    return found


@pytest.mark.parametrize("tool", ["outbox", "shipper"])
def test_every_command_has_help_with_an_example_and_the_exit_codes(tool: str) -> None:
    commands = _commands(GROUPS[tool])
    assert len(commands) >= (10 if tool == "outbox" else 4)
    for path in commands:
        result = CliRunner().invoke(GROUPS[tool], [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Example" in result.stdout and "Exit codes" in result.stdout, path
        assert "Traceback" not in result.output


def test_help_and_version_through_the_console_scripts(subprocess_env: dict[str, str]) -> None:
    for tool in ("outbox", "shipper"):
        out = subprocess.run([str(script_path(tool)), "-h"], capture_output=True, env=subprocess_env, timeout=60)
        assert out.returncode == 0 and b"Examples:" in out.stdout
        version = subprocess.run([str(script_path(tool)), "--version"], capture_output=True, env=subprocess_env, timeout=60)
        assert version.returncode == 0 and version.stdout.startswith(tool.encode())


def test_progress_bars_only_on_a_terminal(tmp_path: Path, outbox_path: Path, subprocess_env: dict[str, str]) -> None:
    run(fill(outbox_path, 3000))
    plain = subprocess.run(
        [str(script_path("outbox")), "export", str(outbox_path)], capture_output=True, env=subprocess_env, timeout=60
    )
    assert plain.returncode == 0 and plain.stderr == b""  # quiet when stderr is not a terminal
    code, seen = on_a_terminal(
        [str(script_path("outbox")), "export", str(outbox_path), "-o", str(tmp_path / "x.jsonl")], subprocess_env
    )
    assert code == 0
    assert b"exporting" in seen and b"3000/3000" in seen
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 3000


def test_outcome_helper_catches_a_second_line() -> None:
    with pytest.raises(AssertionError):
        Outcome(3, "", "outbox: error: a\nmore\n").assert_one_error_line(3)


def test_export_to_a_file_is_as_private_as_the_outbox(tmp_path: Path) -> None:
    import asyncio
    import os
    import stat

    from click.testing import CliRunner

    from outbox import Outbox
    from shipper.outbox_cli import cli as outbox_group

    async def fill() -> None:
        async with Outbox(tmp_path / "e.db") as ob:
            await ob.append("t", {"secret": "payload"})

    asyncio.run(fill())
    old = os.umask(0o022)
    try:
        result = CliRunner().invoke(outbox_group, ["export", str(tmp_path / "e.db"), "-o", str(tmp_path / "out.jsonl")])
    finally:
        os.umask(old)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(os.stat(tmp_path / "out.jsonl").st_mode) == 0o600
    assert "payload" in (tmp_path / "out.jsonl").read_text()
