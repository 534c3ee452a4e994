"""A TCP proxy that delays every chunk by a fixed time each way and counts round trips.

Put in front of Postgres it stands for a database ``delay`` seconds away (50 ms each way is a
100 ms RTT: a hosted Postgres in another region). Its count of *turns* (the client speaking
again after the server answered) is the number of round trips a client made, which tests assert
on instead of timing anything. ``bench`` uses it for the WAN figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from pgproxy import Upstream

__all__ = ["DelayProxy"]


class DelayProxy:
    """Forward 127.0.0.1:<port> to the server in ``dsn``, ``delay`` seconds late each way."""

    def __init__(self, dsn: str, delay: float = 0.0) -> None:
        self.target = dsn
        self.delay = delay
        self._upstream = Upstream(dsn)
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0
        self.turns = 0  # round trips: times a client spoke again after hearing from the server
        self.connections = 0

    def dsn(self, dsn: str | None = None) -> str:
        """``dsn`` (default: the target) reached through the proxy."""
        return self._upstream.through(self.port, dsn)

    def reset(self) -> None:
        """Start counting from zero."""
        self.turns = self.connections = 0

    async def start(self) -> None:
        """Listen on a free port."""
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        """Stop listening and drop every connection."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def __aenter__(self) -> DelayProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await self._upstream.open()
        except OSError:
            writer.close()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        last = ["server"]  # who spoke last on this connection
        for src, dst, side in ((reader, up_writer, "client"), (up_reader, writer, "server")):
            queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
            for coro in (self._read(src, queue, side, last), self._write(queue, dst)):
                task = asyncio.ensure_future(coro)
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _read(self, src: asyncio.StreamReader, queue: asyncio.Queue[tuple[float, bytes]], side: str, last: list[str]) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await src.read(1 << 16):
                if side == "client" and last[0] == "server":
                    self.turns += 1
                last[0] = side
                queue.put_nowait((time.monotonic() + self.delay, data))
        queue.put_nowait((time.monotonic() + self.delay, b""))

    async def _write(self, queue: asyncio.Queue[tuple[float, bytes]], dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while True:
                due, data = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not data:
                    break
                dst.write(data)
                await dst.drain()
        dst.close()
        self._writers.discard(dst)
