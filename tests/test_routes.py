"""Routes against a real Postgres: any topic into the user's own table, typed by the catalog."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cli_support import Cli
from outbox import Outbox, OutboxReader
from shipper import InMemorySink, Shipper, migrate
from shipper.routes import RouteError, parse_routes

MATCHES = """
CREATE TABLE match_results (
    id uuid PRIMARY KEY,
    winner bigint NOT NULL,
    score integer,
    map text NOT NULL DEFAULT 'dust2',
    played_at timestamptz,
    tags text[],
    payload jsonb,
    created_at timestamptz NOT NULL,
    note text,
    detail jsonb
)
"""
ROUTE = {"match_results": "match_results"}


@pytest.fixture
def cli(subprocess_env: dict[str, str]) -> Cli:
    """The installed console scripts, as an operator runs them (a child process each)."""
    return Cli("script", subprocess_env)


async def execute(dsn: str, *sql: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in sql:
            await conn.execute(statement)
    finally:
        await conn.close()


async def fetch(dsn: str, sql: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql))
    finally:
        await conn.close()


async def test_payload_keys_fill_typed_columns_and_refused_rows_become_dead_letters(
    outbox_path: Path, pg_dsn: str, decoder: str
) -> None:
    await execute(pg_dsn, MATCHES)
    detail = {"k": [1, "two", {"3": None}], "q": 'say "hi" \\ and\ttab', "f": 0.1 + 0.2, "u": "\u00e9\u2028"}
    good = {"winner": 42, "score": 3, "map": "mirage", "played_at": "2024-05-01T10:00:00+02:00", "tags": ["ranked", 'a "b"'], "extra": {"x": 1}, "detail": detail}
    async with Outbox(outbox_path) as ob:
        ok = await ob.append("match_results", good)
        snowflake = await ob.append("match_results", {"winner": "123456789012345678"})  # defaults and NULLs
        wrong_type = await ob.append("match_results", {"winner": "not a number"})
        bad_int = await ob.append("match_results", {"winner": 1, "score": 2.5})
        no_winner = await ob.append("match_results", {"score": 1})
        other = await ob.append("clicks", {"i": 1})
        huge = await ob.append("match_results", {"winner": 7, "detail": {"big": 2**70}})  # past 64 bits: orjson declines
        tail = [await ob.append("match_results", {"winner": i, "score": i}) for i in range(20)]
    async with Shipper(outbox_path, pg_dsn, routes=ROUTE) as s:
        await s.drain(timeout=30)
        assert s.stats.dead == 3
    rows = {str(r["id"]): r for r in await fetch(pg_dsn, "SELECT * FROM match_results")}
    assert set(rows) == {ok, snowflake, huge, *tail}
    assert json.loads(rows[huge]["detail"]) == {"big": 2**70}
    row = rows[ok]
    assert (row["winner"], row["score"], row["map"], row["tags"]) == (42, 3, "mirage", ["ranked", 'a "b"'])
    assert row["played_at"].isoformat() == "2024-05-01T08:00:00+00:00"  # Postgres converted the text
    assert json.loads(row["payload"]) == good and row["note"] is None  # the whole payload; "extra" has no column
    assert json.loads(row["detail"]) == detail  # a json column from a payload key, escapes and all
    bare = rows[snowflake]
    assert (bare["winner"], bare["score"], bare["map"], bare["tags"]) == (123456789012345678, None, "dust2", None)
    events = await fetch(pg_dsn, "SELECT id::text, created_at FROM outbox_events")
    assert [r["id"] for r in events] == [other]
    async with OutboxReader(outbox_path) as reader:
        created = {e.id: e.created_at for chunk in [await reader.read_pending(100, after=0)] for e in chunk}
        dead = {d.id: d.error for d in await reader.dead_letters()}
    assert int(row["created_at"].timestamp() * 1_000_000) == created[ok]
    assert set(dead) == {wrong_type, bad_int, no_winner}
    assert 'invalid input syntax for type bigint: "not a number"' in dead[wrong_type] and "22P02" in dead[wrong_type]
    assert dead[wrong_type].startswith("column winner: ") and dead[bad_int].startswith("column score: ")
    assert "integer" in dead[bad_int] and "2.5" in dead[bad_int]
    assert 'null value in column "winner"' in dead[no_winner] and "23502" in dead[no_winner]


async def test_verify_and_replay_through_the_route(outbox_path: Path, pg_dsn: str, cli: Cli) -> None:
    await execute(pg_dsn, MATCHES)
    async with Outbox(outbox_path) as ob:
        ids = [await ob.append("match_results", {"winner": i}) for i in range(30)]
    async with Shipper(outbox_path, pg_dsn, routes=ROUTE) as s:
        await s.drain(timeout=30)
    route = ["--route", "match_results=match_results"]
    verified = cli("outbox", "verify", str(outbox_path), "--dsn", pg_dsn, *route, "--json")
    assert verified.code == 0 and json.loads(verified.stdout)["ok"], verified.stdout
    await execute(pg_dsn, f"DELETE FROM match_results WHERE id IN ('{ids[3]}', '{ids[7]}')")  # a restore lost them
    verified = cli("outbox", "verify", str(outbox_path), "--dsn", pg_dsn, *route, "--json")
    assert verified.code == 1 and set(json.loads(verified.stdout)["missing_ids"]) == {ids[3], ids[7]}
    replayed = cli("outbox", "replay", str(outbox_path), "--dsn", pg_dsn, *route, "--json")
    assert replayed.code == 0 and json.loads(replayed.stdout)["inserted"] == 2, replayed.stdout
    again = cli("outbox", "replay", str(outbox_path), "--dsn", pg_dsn, "--json", env={"OUTBOX_ROUTES": "match_results=match_results"})
    assert again.code == 0 and json.loads(again.stdout)["inserted"] == 0, again.stdout
    assert sorted(str(r[0]) for r in await fetch(pg_dsn, "SELECT id FROM match_results")) == sorted(ids)
    assert (await fetch(pg_dsn, "SELECT count(*) FROM outbox_events"))[0][0] == 0


async def test_a_route_added_later_to_a_running_set_up(outbox_path: Path, pg_dsn: str, cli: Cli) -> None:
    """Before the route, the topic went to outbox_events; after it, to the table. Verify finds both;
    a replay through the route fills the table with the earlier ones too."""
    async with Outbox(outbox_path) as ob:
        early = [await ob.append("match_results", {"winner": i}) for i in range(5)]
    async with Shipper(outbox_path, pg_dsn) as s:
        await s.drain(timeout=30)
    await execute(pg_dsn, MATCHES)
    async with Outbox(outbox_path) as ob:
        late = [await ob.append("match_results", {"winner": i}) for i in range(5)]
    async with Shipper(outbox_path, pg_dsn, routes=ROUTE) as s:
        await s.drain(timeout=30)
    assert sorted(str(r[0]) for r in await fetch(pg_dsn, "SELECT id FROM match_results")) == sorted(late)
    assert sorted(str(r[0]) for r in await fetch(pg_dsn, "SELECT id FROM outbox_events")) == sorted(early)
    verified = cli("outbox", "verify", str(outbox_path), "--dsn", pg_dsn, "--route", "match_results=match_results")
    assert verified.code == 0, verified.stdout
    replayed = cli("outbox", "replay", str(outbox_path), "--dsn", pg_dsn, "--route", "match_results=match_results", "--json")
    assert json.loads(replayed.stdout)["inserted"] == 5
    assert sorted(str(r[0]) for r in await fetch(pg_dsn, "SELECT id FROM match_results")) == sorted(early + late)


async def test_columns_are_read_again_after_a_schema_error(outbox_path: Path, pg_dsn: str) -> None:
    await execute(pg_dsn, MATCHES)
    async with Outbox(outbox_path) as ob, Shipper(outbox_path, pg_dsn, routes=ROUTE, outbox=ob, backoff_cap=0.2) as s:
        await ob.append("match_results", {"winner": 1, "note": "a"})
        await s.drain(timeout=30)
        await execute(pg_dsn, "ALTER TABLE match_results DROP COLUMN note")
        second = await ob.append("match_results", {"winner": 2, "note": "b"})
        await s.drain(timeout=30)
        assert s.stats.retries >= 1 and s.stats.dead == 0
    assert str((await fetch(pg_dsn, "SELECT id FROM match_results WHERE winner = 2"))[0][0]) == second


async def test_a_route_to_a_missing_table_is_one_clear_error(outbox_path: Path, pg_dsn: str, cli: Cli) -> None:
    await migrate(pg_dsn)
    async with Outbox(outbox_path) as ob:
        await ob.append("match_results", {"winner": 1})
    s = Shipper(outbox_path, pg_dsn, routes=ROUTE)
    await s.start()
    try:
        with pytest.raises(RouteError, match="no such table"):
            await s.drain(timeout=30)
    finally:
        await s.stop()
    drained = cli("shipper", "drain", "--outbox", str(outbox_path), "--dsn", pg_dsn, "--route", "match_results=match_results")
    drained.assert_one_error_line(4, "route match_results -> public.match_results", "no such table")
    async with OutboxReader(outbox_path) as reader:
        assert (await reader.status()).pending == 1  # nothing lost


async def test_a_payload_utf8_cannot_hold_is_set_aside_and_the_rest_ship(
    outbox_path: Path, pg_dsn: str, decoder: str
) -> None:
    """``append`` refuses a lone surrogate (jsonb cannot hold one), but a file written by other
    means (an older version, sqlite3 by hand) may hold one. The shipper must set that event
    aside, saying why, and ship the rest: not fail the batch on every retry."""
    await execute(pg_dsn, MATCHES)
    async with Outbox(outbox_path) as ob:
        routed = [await ob.append("match_results", {"winner": i, "map": "m"}) for i in range(40)]
        plain = [await ob.append("clicks", {"i": i}) for i in range(40)]
    odd = {routed[20]: '{"winner":7,"map":"\\ud800"}', routed[30]: '{"winner":8,"map":"a\\udfffb"}',
           plain[5]: '{"i":"\\ud800"}'}
    with contextlib.closing(sqlite3.connect(outbox_path)) as db, db:  # closed: 3.13 warns of an open one
        db.executemany("UPDATE events SET payload = ? WHERE id = ?", [(p, i) for i, p in odd.items()])
    shipped, dead = await _ship_all(outbox_path, pg_dsn)
    assert shipped == set(routed + plain) - set(odd)
    assert set(dead) == set(odd)
    assert "string at $.map holds a lone surrogate U+D800" in dead[routed[20]]
    assert "string at $.map holds a lone surrogate U+DFFF at index 1" in dead[routed[30]]
    assert "surrogate" in dead[plain[5]]  # Postgres's jsonb refuses the escape: its own words


async def test_a_row_that_is_not_utf8_is_set_aside_and_the_rest_ship(outbox_path: Path, pg_dsn: str) -> None:
    """A byte gone bad on disk (or a tool that wrote bytes): SQLite hands back text that is not
    UTF-8, which Python's sqlite3 refuses to read. Every event after it must still ship, and
    that one be set aside saying what is wrong with it: not a read that fails on every retry."""
    await execute(pg_dsn, MATCHES)
    async with Outbox(outbox_path) as ob:
        routed = [await ob.append("match_results", {"winner": i}) for i in range(30)]
        plain = [await ob.append("clicks", {"i": i}) for i in range(30)]
    bad = {routed[10]: "payload", plain[20]: "payload", plain[25]: "topic"}
    with contextlib.closing(sqlite3.connect(outbox_path)) as db, db:  # closed: 3.13 warns of an open one
        db.execute("UPDATE events SET payload = CAST(x'7b2277696e6e6572223a372c226d6170223aff227d' AS TEXT) WHERE id = ?",
                   (routed[10],))  # {"winner":7,"map":"\xff"}
        db.execute("UPDATE events SET payload = CAST(x'7b2269223aff7d' AS TEXT) WHERE id = ?", (plain[20],))
        db.execute("UPDATE events SET topic = CAST(x'636c69636bc3' AS TEXT) WHERE id = ?", (plain[25],))
    shipped, dead = await _ship_all(outbox_path, pg_dsn)
    assert shipped == set(routed + plain) - set(bad)
    assert set(dead) == set(bad)
    for event_id, column in bad.items():
        assert f"{column} is not valid UTF-8" in dead[event_id], dead[event_id]
    assert "payload is not valid UTF-8 (byte 0xff at offset 5)" in dead[plain[20]]

    # an operator asks for them again: still unreadable, so dead again, and shipping goes on
    late = await _append_one(outbox_path)
    async with OutboxReader(outbox_path) as reader:
        assert await reader.retry_dead() == 3
    async with Shipper(outbox_path, pg_dsn, routes=ROUTE) as s:
        await s.drain(timeout=30)
    async with OutboxReader(outbox_path) as reader:
        again = await reader.dead_letters()
    assert {d.id for d in again} == set(bad) and all(d.status == "dead" and d.attempts == 2 for d in again)
    assert late in {str(r["id"]) for r in await fetch(pg_dsn, "SELECT id FROM outbox_events")}


async def _ship_all(path: Path, dsn: str) -> tuple[set[str], dict[str, str]]:
    """Drain ``path`` with ROUTE; return the ids now in Postgres (routed and plain) and the
    dead letters' errors by id."""
    async with Shipper(path, dsn, routes=ROUTE) as s:
        await s.drain(timeout=30)
    shipped = {str(r["id"]) for r in await fetch(dsn, "SELECT id FROM match_results")}
    shipped |= {str(r["id"]) for r in await fetch(dsn, "SELECT id FROM outbox_events")}
    async with OutboxReader(path) as reader:
        dead = {d.id: d.error for d in await reader.dead_letters()}
    return shipped, dead


async def _append_one(path: Path) -> str:
    async with Outbox(path) as ob:
        return await ob.append("clicks", {"late": True})


async def test_a_table_without_a_uuid_id_key_is_refused(outbox_path: Path, pg_dsn: str) -> None:
    await execute(pg_dsn, "CREATE TABLE loose (id uuid, winner bigint)")
    async with Outbox(outbox_path) as ob:
        await ob.append("loose", {"winner": 1})
    s = Shipper(outbox_path, pg_dsn, routes={"loose": "loose"})
    await s.start()
    try:
        with pytest.raises(RouteError, match="primary key or a unique key"):
            await s.drain(timeout=30)
    finally:
        await s.stop()


def test_route_items_parse_and_bad_ones_are_named() -> None:
    assert parse_routes(["a=b", "c = d,e=f"]) == {"a": "b", "c": "d", "e": "f"}
    with pytest.raises(ValueError, match="'nope' is not TOPIC=TABLE"):
        parse_routes(["nope"])
    with pytest.raises(ValueError, match="shipper's own table"):
        parse_routes(["x=outbox_ledger"])


async def test_in_memory_sink_keeps_rows_by_route(outbox_path: Path) -> None:
    sink = InMemorySink(routes=ROUTE)
    async with Outbox(outbox_path) as ob:
        match = await ob.append("match_results", {"winner": 1})
        click = await ob.append("clicks", {})
    async with Shipper(outbox_path, sink=sink) as s:
        await s.drain(timeout=10)
    assert set(sink.rows["match_results"]) == {match} and set(sink.rows["outbox_events"]) == {click}
    async with OutboxReader(outbox_path) as reader:
        events = await reader.read_pending(10, after=0)
    assert await sink.missing(events) == []


async def test_a_drain_names_the_fatal_error_that_stopped_the_shipper_mid_drain(outbox_path: Path, pg_dsn: str) -> None:
    """The flake of the test above: when the loop stopped on its fatal error while the drain was
    reading the outbox, the drain said "the shipper stopped before the drain finished" instead
    of the error. Here the drain's read waits for the loop to end, so that ordering always holds."""
    await execute(pg_dsn, "CREATE TABLE loose2 (id uuid, winner bigint)")
    async with Outbox(outbox_path) as ob:
        await ob.append("loose2", {"winner": 1})
    s = Shipper(outbox_path, pg_dsn, routes={"loose2": "loose2"})
    await s.start()
    task, read = s._task, s.reader.read_pending
    assert task is not None

    async def read_once_the_loop_ended(*args: Any, **kwargs: Any) -> Any:
        await asyncio.wait([task])
        return await read(*args, **kwargs)

    s.reader.read_pending = read_once_the_loop_ended  # type: ignore[method-assign]
    try:
        with pytest.raises(RouteError, match="primary key or a unique key"):
            await s.drain(timeout=30)
    finally:
        s.reader.read_pending = read  # type: ignore[method-assign]
        await s.stop()
