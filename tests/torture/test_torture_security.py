"""Security: private files, no password anywhere, topics that cannot inject SQL, an import that
cannot write outside its outbox.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import pytest

from outbox import Outbox, OutboxReader, uuid7
from pgserver import PgServer
from shipper import Shipper, ShipperError
from torture_kit import Tally, cli, count_postgres, execute, keyed


def test_outbox_wal_and_side_files_are_0600_whatever_the_umask(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    """With ``umask 000`` (the worst a service manager may hand over), while a bot appends and a
    shipper's reader has the side file open -- and after a quarantine."""
    path = tmp_path / "events.db"
    script = textwrap.dedent(
        f"""
        import asyncio, os, sys
        os.umask(0)
        from outbox import Outbox, OutboxReader
        async def main():
            async with Outbox({str(path)!r}) as ob, OutboxReader({str(path)!r}) as reader:
                for i in range(2000):
                    await ob.append("t", {{"i": i}})
                await reader.advance(10)
                print("open", flush=True)
                sys.stdin.readline()
        asyncio.run(main())
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=subprocess_env)
    try:
        assert proc.stdout is not None and proc.stdout.readline() == b"open\n"
        files = sorted(p for p in tmp_path.iterdir() if p.name.startswith("events.db"))
        names = {p.name for p in files}
        assert {"events.db", "events.db-wal", "events.db-shm", "events.db-ship", "events.db-ship-wal"} <= names, names
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in files}
        assert all(mode == 0o600 for mode in modes.values()), {k: oct(v) for k, v in modes.items()}
    finally:
        proc.communicate(b"\n", timeout=30)
    path.write_bytes(b"garbage" * 1000)
    os.chmod(path, 0o600)
    old = os.umask(0)
    try:
        asyncio.run(_quarantine_once(path))
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.name.startswith("events.db")}
    assert any(".corrupt-" in name for name in modes) and all(m == 0o600 for m in modes.values()), modes


async def _quarantine_once(path: Path) -> None:
    async with Outbox(path, on_corrupt="quarantine") as ob:
        await ob.append("t", {"after": True})
    async with OutboxReader(path):
        pass


@contextmanager
def password_required(pg_server: PgServer, role: str) -> Iterator[None]:
    """Make the embedded server ask ``role`` for its password (it trusts local logins otherwise)."""
    server = getattr(pg_server, "_embedded", None)
    if server is None:  # OUTBOX_TEST_DSN: a server the tests cannot reconfigure; it checks passwords, or the role's NOLOGIN refuses it
        yield
        return
    hba = Path(server.pgdata) / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"local all {role} scram-sha-256\nhost all {role} 127.0.0.1/32 scram-sha-256\n" + original)
    asyncio.run(execute(pg_server.dsn, "SELECT pg_reload_conf()"))
    try:
        yield
    finally:
        hba.write_text(original)
        asyncio.run(execute(pg_server.dsn, "SELECT pg_reload_conf()"))


def with_login(dsn: str, user: str, password: str) -> str:
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(netloc=f"{quote(user)}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}"))


def test_no_password_in_any_log_line_error_or_status(
    tmp_path: Path, pg_server: PgServer, subprocess_env: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    """A DSN whose login Postgres refuses, run through the shipper (logs at DEBUG, every
    logger, asyncpg's included), its stats, ``outbox status``, and every command taking a DSN.

    The role may not log in at all (NOLOGIN), so the login fails on any server: the embedded one,
    told to ask this role for its password, refuses the wrong password first; a server that trusts
    local logins (``OUTBOX_TEST_DSN``) never asks for it and refuses the role instead. Either way
    the password is in every DSN handed to the shipper and the CLI, and must be in no output."""
    role = f"torture_pw_{uuid.uuid4().hex[:8]}"
    right, wrong = f"Right-{uuid.uuid4().hex}", f"S3cr%t@:/ '{uuid.uuid4().hex}'"
    forms = {wrong, quote(wrong, safe=""), quote(wrong), right}
    asyncio.run(execute(pg_server.dsn, f"CREATE ROLE {role} NOLOGIN PASSWORD '{right}'"))
    bad = with_login(pg_server.dsn, role, wrong)
    malformed = bad.replace("@", "@[", 1)  # not even a parseable host
    path = tmp_path / "events.db"
    seen: list[str] = []
    try:
        with password_required(pg_server, role):
            caplog.set_level(logging.DEBUG)
            asyncio.run(_ship_with(path, bad, seen))
            asyncio.run(_ship_with(path, malformed, seen))
            seen += [r.getMessage() for r in caplog.records]
            seen.append(caplog.text)
            handler = logging.StreamHandler()
            seen += [handler.format(r) for r in caplog.records]  # tracebacks included
            env = {**subprocess_env, "OUTBOX_DSN": bad}
            for args, code in [
                (("outbox", "status", str(path)), 0),
                (("outbox", "status", str(path), "--json"), 0),
                (("shipper", "migrate", "--dsn", bad), 4),
                (("shipper", "drain", "--outbox", str(path), "--dsn", bad, "--log-level", "debug"), 4),
                (("shipper", "drain", "--outbox", str(path), "--log-level", "debug"), 4),
                (("shipper", "migrate", "--dsn", malformed), 4),
                (("outbox", "verify", str(path), "--dsn", bad), 4),
                (("outbox", "replay", str(path), "--dsn", bad), 4),
            ]:
                run = cli(*args, env=env)
                assert run.code == code, run
                assert "Traceback" not in run.stderr, run.stderr
                seen.append(run.stdout + run.stderr)
            sidecar = subprocess.Popen(
                [str(Path(sys.executable).parent / "shipper"), "run", "--outbox", str(path), "--log-level", "debug", "--stop-timeout", "1"],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
            )  # fmt: skip
            try:
                asyncio.run(asyncio.sleep(2.0))
            finally:
                sidecar.send_signal(signal.SIGTERM)
                out, _ = sidecar.communicate(timeout=60)
            seen.append(out.decode("utf-8", "replace"))
    finally:
        asyncio.run(execute(pg_server.dsn, f"DROP ROLE IF EXISTS {role}"))
    text = "\n".join(seen)
    refusals = ["password authentication failed"]
    if not pg_server.controllable:
        refusals.append("not permitted to log in")
    assert any(r in text for r in refusals), "the server should have refused the login"
    assert f"{role}:***@" in text, "the DSN should be shown, redacted"
    leaks = [form for form in forms if form in text]
    assert not leaks, f"password leaked in {len([s for s in seen if any(f in s for f in leaks)])} outputs"
    print(f"\nno password in {len(caplog.records)} log records (DEBUG, every logger) and {len(seen)} outputs")


async def _ship_with(path: Path, dsn: str, seen: list[str]) -> None:
    async with Outbox(path) as ob:
        await ob.append("t", {"x": 1})
    s = Shipper(path, dsn, backoff_cap=0.1)
    await s.start()
    try:
        with pytest.raises(ShipperError) as failed:  # a timeout, or the malformed DSN itself
            await s.drain(timeout=1.0)
    finally:
        await s.stop(timeout=1)
    assert s.stats.shipped == 0
    seen += [str(failed.value), str(s.stats)]
    async with OutboxReader(path) as reader:
        status = await reader.status()
    seen.append(json.dumps(status.as_json()))


INJECTIONS = [
    "x'); DROP TABLE outbox_events;--",
    'x"); DROP TABLE command_calls; --',
    "t' OR '1'='1",
    "command_calls'; DELETE FROM outbox_ledger; --",
    "command_calls; DROP TABLE outbox_events",
    "\\'; SELECT pg_sleep(10); --",
    "$1); DROP TABLE outbox_ledger; --",
]


async def test_topics_cannot_inject_sql(tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally) -> None:
    """Hostile topics ship as data, and the same strings as ``--topic`` filters select exactly them."""
    path = tmp_path / "events.db"
    acked: list[str] = []
    async with Outbox(path) as ob:
        for n, topic in enumerate(INJECTIONS, 1):
            acked += [await ob.append(topic, keyed(f"inj{n}", i)) for i in range(n)]
        acked += [await ob.append("plain", keyed("plain", i)) for i in range(10)]
    async with Shipper(path, pg_dsn) as s:
        await s.drain(timeout=60)
    conn = await asyncpg.connect(pg_dsn)
    try:
        per_topic = dict(await conn.fetch("SELECT topic, count(*) FROM outbox_events GROUP BY topic"))
        assert await conn.fetchval("SELECT count(*) FROM outbox_ledger") >= 1
        assert await conn.fetchval("SELECT count(*) FROM command_calls") == 0, "no topic is command_calls but the real one"
    finally:
        await conn.close()
    assert per_topic == {**{t: n for n, t in enumerate(INJECTIONS, 1)}, "plain": 10}
    for n, topic in enumerate(INJECTIONS, 1):
        exported = cli("outbox", "export", str(path), "--topic", topic, env=subprocess_env)
        assert exported.code == 0 and len(exported.stdout.splitlines()) == n, exported
        assert {json.loads(line)["topic"] for line in exported.stdout.splitlines()} == {topic}
        replayed = cli("outbox", "replay", str(path), "--dsn", pg_dsn, "--topic", topic, "--json", env=subprocess_env)
        assert replayed.code == 0 and replayed.json()["selected"] == n, replayed
        listed = cli("outbox", "dead", "list", str(path), "--topic", topic, "--json", env=subprocess_env)
        assert listed.code == 0 and json.loads(listed.stdout) == []
    tally.faults, tally.fault = len(INJECTIONS), "SQL-injection topics (shipped, exported, replayed by topic)"
    await tally.settle(pg_dsn, acked)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


async def test_import_cannot_write_outside_its_outbox(tmp_path: Path, pg_dsn: str, subprocess_env: dict[str, str], tally: Tally) -> None:
    """Records naming other files, ATTACH statements, forged seqs and statuses: the import writes
    its outbox (and its -wal/-shm/-ship files) and nothing else, and every event arrives pending."""
    home = tmp_path / "home"
    elsewhere = tmp_path / "elsewhere"
    for folder in (home, elsewhere):
        folder.mkdir()
    (elsewhere / "precious.txt").write_text("keep me")
    path = home / "events.db"
    async with Outbox(path) as ob:
        first = [await ob.append("t", keyed("first", i)) for i in range(100)]
    async with OutboxReader(path) as reader:
        await reader.advance(await reader.last_seq())  # pretend these shipped: the cursor is at 100
    evil = str(elsewhere / "evil.db")
    records: list[dict[str, Any]] = []
    for i, topic in enumerate(
        [
            f"'; ATTACH DATABASE '{evil}' AS e; CREATE TABLE e.x(a); --",
            f"../../{elsewhere.name}/precious.txt",
            "t",
        ]
    ):
        for j in range(50):
            records.append(
                {
                    "id": uuid7(),
                    "topic": topic,
                    "payload": {"k": f"evil{i}:{j}", "path": evil, "sql": f"ATTACH '{evil}' AS e"},
                    "seq": -5 if j % 2 else 10**18,
                    "status": "shipped",
                    "created_at": "1970-01-01T00:00:00Z",
                }
            )
    source = tmp_path / "evil.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records))
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    before = snapshot(tmp_path)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "outbox"), "import", str(path), str(source)],
        cwd=cwd, capture_output=True, env=subprocess_env, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    after = snapshot(tmp_path)
    allowed = {f"{path}{suffix}" for suffix in ("", "-wal", "-shm", "-ship", "-ship-wal", "-ship-shm")}
    changed = {name for name in after if before.get(name) != after[name]} | (set(before) - set(after))
    assert changed <= allowed, f"the import touched {sorted(changed - allowed)}"
    assert not Path(evil).exists() and (elsewhere / "precious.txt").read_text() == "keep me"
    assert list(cwd.iterdir()) == []
    async with OutboxReader(path) as reader:
        status = await reader.status()
        imported = [e async for chunk in reader.iter_events() for e in chunk if e.seq > 100]
    assert status.pending == len(records) and status.cursor == 100, status
    assert [e.id for e in imported] == [r["id"] for r in records], "imported in file order, after the existing seqs"
    async with Shipper(path, pg_dsn) as s:
        await s.drain(timeout=60)
    tally.faults, tally.fault = len(records), "hostile records imported"
    await tally.settle(pg_dsn, [r["id"] for r in records], committed=[r["id"] for r in records])
    assert not set(first) & (await count_postgres(pg_dsn)).ids  # marked shipped by hand, never sent
