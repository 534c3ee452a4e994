"""Running the ``outbox`` and ``shipper`` command lines from tests, in process and as real scripts."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
from click.testing import CliRunner

from outbox import Outbox, OutboxReader
from shipper.cli import shipper as shipper_group
from shipper.outbox_cli import cli as outbox_group

__all__ = ["Outcome", "Cli", "with_password", "fill", "rows_in", "run", "on_a_terminal"]

GROUPS = {"outbox": outbox_group, "shipper": shipper_group}


def run(coro: Any) -> Any:
    """Run a coroutine from a synchronous test (the commands run their own event loops)."""
    return asyncio.run(coro)


@dataclass
class Outcome:
    """What a command did."""

    code: int
    stdout: str
    stderr: str

    @property
    def err_lines(self) -> list[str]:
        return self.stderr.splitlines()

    def assert_one_error_line(self, code: int, *needles: str, secret: str | None = None) -> str:
        """Assert the exit code, exactly one line on stderr holding ``needles``, no traceback."""
        assert self.code == code, (self.code, self.stdout, self.stderr)
        assert len(self.err_lines) == 1, self.stderr
        line = self.err_lines[0]
        for needle in needles:
            assert needle in line, line
        assert "Traceback" not in self.stdout + self.stderr
        if secret is not None:
            assert secret not in self.stdout + self.stderr
        return line


class Cli:
    """Run a command through ``CliRunner`` (``mode="runner"``) or the installed console script."""

    def __init__(self, mode: str, base_env: Mapping[str, str]) -> None:
        self.mode = mode
        self.base_env = dict(base_env)

    def __call__(
        self, tool: str, *args: str, env: Mapping[str, str | None] | None = None, input: bytes | None = None
    ) -> Outcome:
        overrides: dict[str, str | None] = {"OUTBOX_PATH": None, "OUTBOX_DSN": None, "DATABASE_URL": None}
        overrides.update(env or {})
        if self.mode == "runner":
            result = CliRunner().invoke(GROUPS[tool], list(args), env=overrides, input=input, catch_exceptions=False)
            return Outcome(result.exit_code, result.stdout, result.stderr)
        return script(tool, *args, env={**self.base_env, **overrides}, input=input)


def script_path(tool: str) -> Path:
    """The console script ``pip install -e .`` put beside this interpreter."""
    path = Path(sys.executable).parent / tool
    assert path.exists(), f"{path} is missing: run `make test` (or pip install -e .) to install the console scripts"
    return path


def script(tool: str, *args: str, env: Mapping[str, str | None], input: bytes | None = None) -> Outcome:
    """Run the installed console script as a child process."""
    clean = {k: v for k, v in env.items() if v is not None}
    proc = subprocess.run(
        [str(script_path(tool)), *args], input=input, capture_output=True, env=clean, timeout=120, check=False
    )
    return Outcome(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


def with_password(dsn: str, password: str = "s3cret") -> tuple[str, str]:
    """Return ``dsn`` with a password (the test server trusts local logins), and that password."""
    parts = urlsplit(dsn)
    if parts.password:
        return dsn, parts.password
    user = parts.username or "postgres"
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{password}@{host}")), password


async def fill(path: Path, n: int, topic: str = "clicks", **extra: Any) -> list[str]:
    """Append ``n`` events; return their ids."""
    async with Outbox(path) as ob:
        return [await ob.append(topic, {"i": i, **extra}) for i in range(n)]


async def mark_shipped(path: Path, up_to_seq: int | None = None) -> None:
    """Move the shipping cursor as a shipper would (for tests of local commands)."""
    async with OutboxReader(path) as reader:
        await reader.advance(up_to_seq if up_to_seq is not None else await reader.last_seq())


async def rows_in(dsn: str, table: str) -> set[str]:
    """Return the ids in a Postgres table."""
    conn = await asyncpg.connect(dsn)
    try:
        return {r[0] for r in await conn.fetch(f"SELECT id::text FROM {table}")}
    finally:
        await conn.close()


def env_without_dsn() -> dict[str, str]:
    """This process's environment minus anything that would pick a database or outbox."""
    env = dict(os.environ)
    for key in ("OUTBOX_PATH", "OUTBOX_DSN", "DATABASE_URL"):
        env.pop(key, None)
    return env


def on_a_terminal(args: list[str], env: dict[str, str]) -> tuple[int, bytes]:
    """Run a command with stderr on a pseudo-terminal; return its code and what it drew there."""
    primary, secondary = pty.openpty()
    try:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=secondary, env=env)
        os.close(secondary)
        secondary = -1
        seen = b""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ready, _, _ = select.select([primary], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(primary, 4096)
                except OSError:  # the child closed the terminal
                    break
                if not chunk:
                    break
                seen += chunk
            elif proc.poll() is not None:
                break
        return proc.wait(timeout=60), seen
    finally:
        os.close(primary)
        if secondary >= 0:
            os.close(secondary)
