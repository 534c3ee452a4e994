"""Paths and DSNs with odd characters: spaces, quotes, unicode, percent signs, ``?``, ``#``, ``;``.

An outbox in such a directory, shipped as such a role into such a database, through the Python
API and every command that takes a path or a DSN (also from ``OUTBOX_PATH``/``OUTBOX_DSN``):
everything arrives once, and the password shows up in no output, raw or percent-encoded.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from outbox import Outbox
from pgserver import PgServer
from shipper import Shipper
from torture_kit import SIZES, Tally, cli, execute, keyed, pick

ODD = "we ird 'q' \"dq\" ünïcødé %41 %% ?x=1 #f ;$(x)"


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


@pytest.mark.parametrize("size", SIZES)
async def test_odd_paths_roles_databases_and_passwords(
    size: str, tmp_path: Path, pg_server: PgServer, subprocess_env: dict[str, str], tally: Tally
) -> None:
    n = pick(size, 2000, 50_000)
    tag = uuid.uuid4().hex[:6]
    role, password, database = f"odd 'user' ü%41 {tag}", f"p@ss:w/rd %41 'q\" ü#?&= {tag}", f"{ODD} {tag}"
    admin = pg_server.dsn
    await execute(
        admin,
        f"CREATE ROLE {ident(role)} LOGIN PASSWORD {literal(password)}",
        f"CREATE DATABASE {ident(database)} OWNER {ident(role)}",
    )
    parts = urlsplit(admin)
    dsn = urlunsplit(
        parts._replace(
            netloc=f"{quote(role, safe='')}:{quote(password, safe='')}@{parts.netloc.rpartition('@')[2]}",
            path="/" + quote(database, safe=""),
        )
    )
    secrets = {password, quote(password, safe=""), quote(password)}
    folder = tmp_path / ODD
    folder.mkdir()
    path, copy, dump = folder / f"{ODD}.db", folder / f"copy {ODD}.db", folder / f"{ODD}.jsonl"
    outputs: list[str] = []
    try:
        migrated = cli("shipper", "migrate", "--dsn", dsn, env=subprocess_env)
        assert migrated.code == 0, migrated.stderr
        outputs.append(migrated.stdout + migrated.stderr)
        async with Outbox(path) as ob:
            acked = [await ob.append(f"topic {ODD}", keyed("odd", i)) for i in range(n)]
        async with Shipper(path, dsn) as s:
            await s.drain(timeout=120)
        env = {**subprocess_env, "OUTBOX_PATH": str(path), "OUTBOX_DSN": dsn}
        runs = [
            cli("outbox", "status", str(path), "--json", env=subprocess_env),
            cli("outbox", "export", str(path), "-o", str(dump), "--topic", f"topic {ODD}", env=subprocess_env),
            cli("outbox", "import", str(copy), str(dump), env=subprocess_env),
            cli("shipper", "drain", "--outbox", str(copy), "--dsn", dsn, env=subprocess_env),
            cli("outbox", "verify", str(path), "--dsn", dsn, env=subprocess_env),
            cli("outbox", "replay", str(path), "--dsn", dsn, "--topic", f"topic {ODD}", env=subprocess_env),
            cli("shipper", "drain", env=env),
            cli("outbox", "status", env=env),
        ]
        for run in runs:
            assert run.code == 0, run
            outputs.append(run.stdout + run.stderr)
        assert runs[0].json()["shipped"] == n
        assert f"exported {n:,} events" in runs[1].stderr
        assert f"imported {n:,} events" in runs[2].stdout
        assert "all present" in runs[4].stdout
        for out in outputs:
            for secret in secrets:
                assert secret not in out, f"the password leaked: {out}"
        tally.faults, tally.fault = len(runs) + 2, "commands run on odd paths and an odd DSN"
        await tally.settle(dsn, acked)
    finally:
        await execute(admin, f"DROP DATABASE IF EXISTS {ident(database)} WITH (FORCE)", f"DROP ROLE IF EXISTS {ident(role)}")
