"""A row whose text is not valid UTF-8 (a byte gone bad on disk, a tool that wrote bytes) stops
nothing: export, verify and replay carry on past it, name it and its first bad byte in one line,
and say in their exit code that something was left out.

`outbox export` used to stop at such a row with sqlite3's "Could not decode to UTF-8" (the text
garbled into the message) and write nothing after it; verify and replay did the same for a
shipped row damaged after it shipped. The shipper already set such rows aside (test_routes).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from cli_support import Cli, fill, rows_in, run
from outbox import OutboxReader, OutboxTextError

BAD_PAYLOAD = "CAST(x'7b2269223a22ff227d' AS TEXT)"  # {"i":"\xff"}: byte 0xff at offset 6
BAD_ID = "CAST(x'30ff' AS TEXT)"


@pytest.fixture(params=["runner", "script"])
def cli(request: pytest.FixtureRequest, subprocess_env: dict[str, str]) -> Cli:
    return Cli(request.param, subprocess_env)


def damage(path: Path, seq: int, column: str = "payload", value: str = BAD_PAYLOAD) -> None:
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE events SET {column} = {value} WHERE seq = ?", (seq,))
    db.close()


def test_export_writes_every_readable_event_and_names_the_unreadable(cli: Cli, tmp_path: Path) -> None:
    box = tmp_path / "a.db"
    ids = run(fill(box, 5000, "clicks"))  # past one read chunk: the rows after the bad one come too
    damage(box, 3)
    damage(box, 2500, "topic", "CAST(x'636c69636bc3' AS TEXT)")

    out = cli("outbox", "export", str(box))
    assert out.code == 3, out.stderr
    assert [r["id"] for r in map(json.loads, out.stdout.splitlines())] == ids[:2] + ids[3:2499] + ids[2500:]
    lines = out.err_lines
    assert lines[0] == f"outbox: warning: left out seq 3 (id {ids[2]}): payload is not valid UTF-8 (byte 0xff at offset 6)"
    assert lines[1].startswith(f"outbox: warning: left out seq 2500 (id {ids[2499]}): topic is not valid UTF-8")
    assert lines[2:] == ["outbox: error: 2 events left out: their text is not valid UTF-8 (4,998 exported)"]
    assert "Traceback" not in out.stderr

    dump = tmp_path / "events.jsonl"
    to_file = cli("outbox", "export", str(box), "-o", str(dump))
    assert to_file.code == 3 and to_file.stdout == ""
    assert to_file.err_lines[-1] == f"outbox: error: 2 events left out of {dump}: their text is not valid UTF-8 (4,998 exported)"
    assert dump.read_text("utf-8") == out.stdout  # the readable events are kept, not thrown away


async def _all_ids(path: Path) -> list[str]:
    async with OutboxReader(path) as reader:
        return [e.id async for chunk in reader.iter_events() for e in chunk]


def test_reading_every_event_names_the_row_it_cannot_read(tmp_path: Path) -> None:
    box = tmp_path / "a.db"
    ids = run(fill(box, 3))
    damage(box, 2)
    with pytest.raises(OutboxTextError) as caught:
        run(_all_ids(box))
    assert str(caught.value) == f"outbox {box}: seq 2 (id {ids[1]}): payload is not valid UTF-8 (byte 0xff at offset 6)"


def test_verify_checks_a_damaged_shipped_event_by_its_id(cli: Cli, outbox_path: Path, pg_dsn: str) -> None:
    ids = run(fill(outbox_path, 10, "clicks"))
    path = str(outbox_path)
    assert cli("shipper", "drain", "--outbox", path, "--dsn", pg_dsn).code == 0
    damage(outbox_path, 4)  # after it shipped: its payload is gone, its id is not

    ok = cli("outbox", "verify", path, "--dsn", pg_dsn)
    assert ok.code == 0, ok.stderr
    assert "checked 10 shipped events" in ok.stdout and "all present" in ok.stdout
    assert ok.err_lines == [
        f"outbox: warning: seq 4 (id {ids[3]}): payload is not valid UTF-8 (byte 0xff at offset 6); checked by its id"
    ]

    damage(outbox_path, 7, "id", BAD_ID)  # no id left to look for
    unsure = cli("outbox", "verify", path, "--dsn", pg_dsn)
    assert unsure.code == 3, unsure.stderr
    assert "checked 9 shipped events" in unsure.stdout and "all present" in unsure.stdout
    assert unsure.err_lines[-1] == "outbox: error: 1 shipped event could not be checked: its id or topic is not valid UTF-8"
    assert "seq 7 (id 0\ufffd): id is not valid UTF-8 (byte 0xff at offset 1); not checked" in unsure.stderr


def test_replay_sends_the_rest_and_names_the_event_it_cannot_read(cli: Cli, outbox_path: Path, pg_dsn: str) -> None:
    ids = run(fill(outbox_path, 10, "clicks"))
    path = str(outbox_path)
    assert cli("shipper", "drain", "--outbox", path, "--dsn", pg_dsn).code == 0
    damage(outbox_path, 4)
    run(_truncate(pg_dsn))

    out = cli("outbox", "replay", path, "--dsn", pg_dsn)
    assert out.code == 3, out.stderr
    assert "replayed 9 events" in out.stdout
    assert run(rows_in(pg_dsn, "outbox_events")) == set(ids) - {ids[3]}
    assert out.err_lines == [
        f"outbox: warning: not replayed seq 4 (id {ids[3]}): payload is not valid UTF-8 (byte 0xff at offset 6)",
        "outbox: error: 1 event not replayed: its text is not valid UTF-8",
    ]


async def _truncate(dsn: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("TRUNCATE outbox_events")
    finally:
        await conn.close()
