"""The test harness itself: the outage proxy and the in-loop deadline hold on every Python."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
import pytest

from pgproxy import PgProxy

TESTS = Path(__file__).parent


async def test_proxy_cut_closes_open_connections_and_returns(pg_dsn: str) -> None:
    """From Python 3.12 ``Server.wait_closed()`` waits for open connections: cut() must close them first."""
    proxy = PgProxy(pg_dsn)
    await proxy.start()
    conn = await asyncpg.connect(proxy.dsn)
    try:
        assert await conn.fetchval("SELECT 1") == 1
        async with asyncio.timeout(30):  # hung forever on 3.12+ when it waited before closing
            await proxy.cut()
        with pytest.raises((asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError)):
            await conn.fetchval("SELECT 1")
        with pytest.raises(OSError):
            await asyncpg.connect(proxy.dsn, timeout=5)
        await proxy.start()
        again = await asyncpg.connect(proxy.dsn)
        assert await again.fetchval("SELECT 2") == 2
        await again.close()
    finally:
        conn.terminate()
        await proxy.cut()


def test_a_stuck_async_test_is_ended_and_the_session_goes_on(tmp_path: Path) -> None:
    """A test stuck on an await while a background task keeps the loop busy (where pytest-timeout's
    own alarm lands, and is lost) fails with the deadline's message, and the next test runs."""
    (tmp_path / "conftest.py").write_text(
        "import pytest\nfrom deadline import in_loop_deadline\n\n"
        "@pytest.hookimpl(wrapper=True)\ndef pytest_runtest_call(item):\n"
        "    with in_loop_deadline(item):\n        return (yield)\n"
    )
    (tmp_path / "test_stuck.py").write_text(
        textwrap.dedent(
            """
            import asyncio, pytest

            async def busy():
                while True:
                    sum(range(100_000))
                    await asyncio.sleep(0)

            @pytest.mark.timeout(3)
            async def test_stuck():
                task = asyncio.create_task(busy())
                try:
                    await asyncio.Event().wait()
                finally:
                    task.cancel()

            def test_after():
                pass
            """
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "asyncio_mode=auto", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert "1 failed, 1 passed" in run.stdout, run.stdout[-3000:]
    assert "cancelled where it waited" in run.stdout, run.stdout[-3000:]
