"""Child processes for the shipping benchmarks: start, wait until ready, release together, collect.

A child prints one line when it is ready (optionally a JSON object after ``ready``), waits for
``go`` on stdin, and prints its report as one JSON line last. Its stderr is read continuously (a
child that logs a lot must never block on a full pipe) and its tail is quoted if it fails. Every
wait has a deadline, so a hung child fails its benchmark instead of the whole run.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections import deque
from typing import Any

import psutil  # type: ignore[import-untyped]

from .core import ROOT, Context

__all__ = ["Child", "ChildError", "tree_cpu", "cpu_delta"]

READY_TIMEOUT_S = 60.0


class ChildError(RuntimeError):
    """A benchmark's child process failed; the message quotes the last line it wrote to stderr."""


class Child:
    """One ``python -m bench.procs.<module> ...`` process."""

    def __init__(self, name: str, proc: asyncio.subprocess.Process) -> None:
        self.name = name
        self.proc = proc
        self.ready: dict[str, Any] = {}
        self.released_at = 0.0  # time.monotonic() when "go" was sent
        self._stderr: deque[str] = deque(maxlen=20)
        assert proc.stderr is not None
        self._drain_err = asyncio.ensure_future(self._read_stderr(proc.stderr))

    @classmethod
    async def start(cls, ctx: Context, module: str, *args: str) -> Child:
        """Start ``bench.procs.<module>`` and wait for its ``ready`` line."""
        proc = await asyncio.create_subprocess_exec(
            ctx.python, "-m", f"bench.procs.{module}", *args,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env=ctx.child_env(), cwd=ROOT,
        )
        child = cls(module, proc)
        try:
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
            text = line.decode(errors="replace").strip()
            if not text.startswith("ready"):
                await asyncio.wait_for(proc.wait(), 10)
                raise ChildError(f"{module} did not start: {await child.last_error() or text or 'no output'}")
            rest = text[len("ready"):].strip()
            child.ready = json.loads(rest) if rest else {}
        except BaseException:
            await child.kill()
            raise
        return child

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def _read_stderr(self, stream: asyncio.StreamReader) -> None:
        async for line in stream:
            text = line.decode(errors="replace").rstrip()
            if text:
                self._stderr.append(text)

    async def last_error(self) -> str:
        """Return the last line the child wrote to stderr (after it exited)."""
        try:
            await asyncio.wait_for(asyncio.shield(self._drain_err), 5)
        except asyncio.TimeoutError:
            pass
        return self._stderr[-1] if self._stderr else ""

    async def go(self) -> None:
        """Release the child."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(b"go\n")
        await self.proc.stdin.drain()
        self.released_at = time.monotonic()

    def terminate(self) -> None:
        """Ask the child to finish (SIGTERM): shippers drain what is pending and report."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)

    async def result(self, timeout: float) -> dict[str, Any]:
        """Wait for the child to exit and return its JSON report (its last line on stdout)."""
        assert self.proc.stdout is not None
        try:
            out = await asyncio.wait_for(self.proc.stdout.read(), timeout)
            await asyncio.wait_for(self.proc.wait(), 10)
        except asyncio.TimeoutError:
            await self.kill()
            raise ChildError(f"{self.name} did not finish within {timeout:g} s") from None
        if self.proc.returncode != 0:
            raise ChildError(f"{self.name} exited with {self.proc.returncode}: {await self.last_error()}")
        lines = out.decode(errors="replace").strip().splitlines()
        if not lines:
            raise ChildError(f"{self.name} printed no report: {await self.last_error()}")
        report: dict[str, Any] = json.loads(lines[-1])
        return report

    async def kill(self) -> None:
        """Kill the child if it is still running and reap it."""
        if self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), 10)
        except asyncio.TimeoutError:
            pass
        self._drain_err.cancel()


def tree_cpu(pid: int | None) -> dict[int, float]:
    """CPU seconds so far of a process and its children, by pid (empty if ``pid`` is None)."""
    if pid is None:
        return {}
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children()]
    except psutil.Error:
        return {}
    out = {}
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        out[p.pid] = float(t.user + t.system)
    return out


def cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """CPU seconds used between two :func:`tree_cpu` readings by the processes alive at both."""
    return sum(after[p] - before[p] for p in after if p in before)
