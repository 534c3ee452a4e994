"""Shared fixtures: a real Postgres with a fresh database per test, and outbox paths."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from deadline import in_loop_deadline  # noqa: E402
from decoders import DECODERS, using  # noqa: E402
from pgbouncer import PgBouncer  # noqa: E402
from pgserver import PgServer, start_server  # noqa: E402


@pytest.fixture(params=DECODERS)
def decoder(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each way a route decodes payloads and writes json columns (see tests/decoders.py)."""
    with using(request.param):
        yield str(request.param)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One Postgres for the whole session: embedded, or the one in ``OUTBOX_TEST_DSN``.

    Its data lives in a directory of its own, not under pytest's tmp_path: pytest deletes all
    but the newest three of those, which kills the server of a session still running when
    several sessions overlap.
    """
    server = start_server()
    yield server
    server.close()


@pytest.fixture(scope="session")
def pgbouncer(pg_server: PgServer) -> Iterator[PgBouncer]:
    """A real PgBouncer in transaction mode, pool of two, in front of the test Postgres."""
    bouncer = PgBouncer(pg_server.dsn)
    bouncer.start()
    yield bouncer
    bouncer.close()


@pytest.fixture(params=["direct", "pgbouncer"])
def via(request: pytest.FixtureRequest) -> str:
    """Run a test both on a direct connection and through PgBouncer (transaction mode)."""
    return str(request.param)


@pytest.fixture
def route_dsn(via: str, request: pytest.FixtureRequest) -> Callable[[str], str]:
    """Turn a test database's DSN into the one to ship through: itself, or via PgBouncer."""
    if via == "direct":
        return lambda dsn: dsn
    bouncer: PgBouncer = request.getfixturevalue("pgbouncer")
    return bouncer.dsn


@pytest.fixture
async def pg_dsn(pg_server: PgServer) -> AsyncIterator[str]:
    """A DSN for a brand-new, empty database, dropped after the test."""
    dsn = await pg_server.create_database()
    yield dsn
    await pg_server.drop_database(dsn)


@pytest.fixture
def outbox_path(tmp_path: Path) -> Path:
    """Where a test's outbox file goes."""
    return tmp_path / "events.db"


@pytest.fixture
def subprocess_env() -> dict[str, str]:
    """Environment for child processes: this interpreter's path, the project importable."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
    env.pop("OUTBOX_DSN", None)
    env.pop("DATABASE_URL", None)
    return env


def run(coro: object) -> object:
    """Run a coroutine to completion (for the few sync helpers that need one)."""
    return asyncio.run(coro)  # type: ignore[arg-type]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """End a stuck async test from inside its event loop (see ``deadline.py``)."""
    with in_loop_deadline(item):
        return (yield)
