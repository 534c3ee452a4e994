"""``outbox import`` fed hostile files: huge lines, deep nesting, invalid UTF-8, a last line cut
short, values Postgres would refuse, records of the wrong shape.

Without ``--skip-bad`` the first bad line is named (file, line, why) on one line and nothing is
imported; with it, exactly the good lines are imported, exactly the bad ones listed, and the
good ones ship. A line of tens of megabytes never sits in memory whole.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest

from outbox import OutboxReader, uuid7
from outbox.payload import MAX_DEPTH
from torture_kit import SIZES, Tally, cli, pick


def good(n: int, tag: str) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        event_id = uuid7()
        record = {"id": event_id, "topic": "imported", "payload": {"k": f"{tag}:{i}", "i": i}}
        out.append((event_id, json.dumps(record).encode() + b"\n"))
    return out


def hostile(huge_mb: int) -> dict[str, bytes]:
    """One bad line of each kind (each ends with a newline unless it is the cut-short last one)."""
    deep = 100_000
    return {
        "huge line": b'{"id": "' + uuid7().encode() + b'", "topic": "t", "payload": {"x": "' + b"A" * (huge_mb << 20) + b'"}}\n',
        "deep nesting": b'{"id": "' + uuid7().encode() + b'", "topic": "t", "payload": ' + b'{"a":' * deep + b"1" + b"}" * deep + b"}\n",
        "invalid UTF-8": b'{"id": "' + uuid7().encode() + b'", "topic": "t", "payload": {"x": "\xff\xfe\xc3"}}\n',
        "NUL escape": json.dumps({"id": uuid7(), "topic": "t", "payload": {"x": "a\u0000b"}}).encode() + b"\n",
        "lone surrogate": b'{"id": "' + uuid7().encode() + b'", "topic": "t", "payload": {"x": "\\ud800"}}\n',
        "NaN": b'{"id": "' + uuid7().encode() + b'", "topic": "t", "payload": {"x": NaN}}\n',
        "not an object": b'["id", "topic", "payload"]\n',
        "id not a UUID": b'{"id": "../../etc/passwd", "topic": "t", "payload": {}}\n',
        "empty topic": json.dumps({"id": uuid7(), "topic": "", "payload": {}}).encode() + b"\n",
        "payload not an object": json.dumps({"id": uuid7(), "topic": "t", "payload": [1, 2]}).encode() + b"\n",
        "bad created_at": json.dumps({"id": uuid7(), "topic": "t", "payload": {}, "created_at": "yesterday"}).encode() + b"\n",
    }


def cut_short() -> bytes:
    """The last line of an export killed mid-write: no newline, JSON broken off."""
    return json.dumps({"id": uuid7(), "topic": "t", "payload": {"x": "cut here"}}).encode()[:-9]


def max_rss_mb(*args: str, env: dict[str, str]) -> tuple[int, float]:
    """Run a console script; return its exit code and its peak resident memory in MB."""
    probe = (
        "import resource, subprocess, sys; p = subprocess.run(sys.argv[1:], capture_output=True);"
        "print(p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    tool = str(Path(sys.executable).parent / args[0])
    out = subprocess.run([sys.executable, "-c", probe, tool, *args[1:]], capture_output=True, text=True, env=env, timeout=300)
    code, kb = out.stdout.split()
    return int(code), int(kb) / 1024


@pytest.mark.parametrize("size", SIZES)
async def test_hostile_import_files(size: str, tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally) -> None:
    n, huge_mb = pick(size, 2000, 100_000), pick(size, 64, 256)
    bad = hostile(huge_mb)
    lines = good(n, "good")
    # the good lines, a bad one of each kind spread among them, a duplicate, a BOM, CRLF, blank lines
    body: list[bytes] = [b"\xef\xbb\xbf" + lines[0][1]]
    expected_bad: dict[int, str] = {}
    step = max(1, n // (len(bad) + 1))
    kinds = iter(bad.items())
    for i, (_, line) in enumerate(lines[1:], 1):
        body.append(line.replace(b"\n", b"\r\n") if i % 7 == 0 else line)
        if i % step == 0 and (kind := next(kinds, None)) is not None:
            body.append(kind[1])
            expected_bad[len(body)] = kind[0]
        if i % 500 == 0:
            body.append(b"\n")
    body.append(lines[5][1])  # the same id twice: imported once
    body.append(cut_short())
    expected_bad[len(body)] = "cut short"
    assert len(expected_bad) == len(bad) + 1
    source = tmp_path / "hostile.jsonl"
    source.write_bytes(b"".join(body))
    path = tmp_path / "events.db"

    refused = cli("outbox", "import", str(path), str(source), env=subprocess_env)
    first_bad = min(expected_bad)
    assert refused.code == 3 and len(refused.stderr.splitlines()) == 1, refused
    assert f"{source} line {first_bad}:" in refused.stderr and "nothing was imported" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr and len(refused.stderr) < 1000
    async with OutboxReader(path, create=True) as reader:
        assert await reader.last_seq() == 0, "a refused import must import nothing"

    code, rss = max_rss_mb("outbox", "import", str(path), str(source), "--skip-bad", env=subprocess_env)
    assert code == 0
    assert rss < huge_mb, f"the import held the {huge_mb} MB line in memory ({rss:.0f} MB peak)"
    again = cli("outbox", "import", str(path), str(source), "--skip-bad", "--json", env=subprocess_env)
    summary = again.json()
    assert summary["added"] == 0 and summary["already_present"] == n + 1, summary  # idempotent
    assert [s["line"] for s in summary["skipped"]] == sorted(expected_bad), summary["skipped"]
    for skipped in summary["skipped"]:
        assert len(skipped["error"]) < 400, skipped  # a reason, not the line echoed back
    assert "no newline" in summary["skipped"][-1]["error"]

    drained = cli("shipper", "drain", "--outbox", str(path), "--dsn", pg_dsn, "--json", env=subprocess_env)
    assert drained.code == 0 and drained.json() == {
        "shipped": n, "pending": 0, "dead": 0, "refused": 0, "retries": 0, "timed_out": False
    }, drained
    tally.faults, tally.fault = len(expected_bad), "hostile lines among the good ones"
    tally.notes.update(huge_line_mb=huge_mb, import_peak_rss_mb=round(rss), kinds=len(bad) + 1)
    await tally.settle(pg_dsn, [event_id for event_id, _ in lines])


async def test_nesting_that_json_allows_ships_intact(tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally) -> None:
    """Deep but legal nesting (and a huge integer) goes through import, the shipper and jsonb unchanged.

    500 levels: the outbox's own limit (``outbox.payload.MAX_DEPTH``), on every Python."""
    deep = MAX_DEPTH - 1  # containers inside the payload object
    payload_text = '{"n": ' + "[" * deep + str(10**300) + "]" * deep + "}"
    ids = [uuid7() for _ in range(3)]
    source = tmp_path / "deep.jsonl"
    source.write_text("".join(f'{{"id": "{i}", "topic": "deep", "payload": {payload_text}}}\n' for i in ids))
    path = tmp_path / "events.db"
    assert cli("outbox", "import", str(path), str(source), env=subprocess_env).code == 0
    drained = cli("shipper", "drain", "--outbox", str(path), "--dsn", pg_dsn, "--json", env=subprocess_env)
    assert drained.code == 0 and drained.json()["shipped"] == 3, drained
    conn = await asyncpg.connect(pg_dsn)
    try:
        back = await conn.fetch("SELECT payload::text FROM outbox_events")
    finally:
        await conn.close()
    for row in back:
        assert json.loads(row[0]) == json.loads(payload_text)
    tally.faults, tally.fault = len(ids), f"records nested {deep} deep"
    await tally.settle(pg_dsn, ids, keyed=False)
