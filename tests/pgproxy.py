"""A loopback TCP proxy in front of the test Postgres that a test can cut and restore.

Cutting closes every open connection and refuses new ones: from the shipper's side this is the
server going away, whichever server the tests use (one they may stop, or ``OUTBOX_TEST_DSN``).
"""

from __future__ import annotations

import asyncio
import contextlib
from urllib.parse import parse_qs, urlsplit, urlunsplit

__all__ = ["PgProxy", "Upstream"]


class Upstream:
    """Where a test proxy forwards to: the server of ``dsn``, over TCP or its Unix socket.

    Shared by :class:`PgProxy` and :class:`delayproxy.DelayProxy`.
    """

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        parts = urlsplit(dsn)
        host = parse_qs(parts.query).get("host", [parts.hostname or "127.0.0.1"])[0]
        self._unix = f"{host}/.s.PGSQL.{parts.port or 5432}" if host.startswith("/") else None
        self._tcp = (host, parts.port or 5432)

    async def open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """A connection to the server (OSError if it is not there)."""
        if self._unix:
            return await asyncio.open_unix_connection(self._unix)
        return await asyncio.open_connection(*self._tcp)

    def through(self, port: int, dsn: str | None = None) -> str:
        """``dsn`` (default: the upstream's) reached through a proxy on 127.0.0.1:``port``."""
        parts = urlsplit(dsn or self.dsn)
        user = parts.username or "postgres"
        auth = f"{user}:{parts.password}@" if parts.password else f"{user}@"
        return urlunsplit(("postgresql", f"{auth}127.0.0.1:{port}", parts.path, "", ""))


class PgProxy:
    """Forward 127.0.0.1:<port> to the server in ``dsn`` (TCP or a Unix socket)."""

    def __init__(self, dsn: str) -> None:
        self.target = dsn
        self._upstream = Upstream(dsn)
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.StreamWriter] = set()
        self.port = 0

    @property
    def dsn(self) -> str:
        """A DSN for the same database, through the proxy."""
        return self._upstream.through(self.port)

    async def start(self) -> None:
        """Listen (again) on the same port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def cut(self) -> None:
        """Refuse new connections and close the open ones.

        The connections are closed before waiting for the server: from Python 3.12,
        ``Server.wait_closed()`` returns only once every connection it accepted has closed.
        """
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for writer in list(self._pipes):
            writer.close()
        self._pipes.clear()
        if server is not None:
            await server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._upstream.open()
        except OSError:
            writer.close()
            return
        if self._server is None:  # cut while this one was connecting upstream: it must not outlive the cut
            writer.close()
            up_writer.close()
            return
        self._pipes.update((writer, up_writer))
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        dst.close()
        self._pipes.discard(dst)
