"""What every torture scenario shares: sizes, the tally of what was counted, and real processes.

A scenario appends events it can name (each payload carries a unique key ``k``), injects its
faults, lets the shipper finish, and then counts in Postgres: every acknowledged append must be
there exactly once, or be a dead letter the scenario planted. :class:`Tally` holds the figures,
asserts them, and hands them to the terminal summary (``conftest.py``) and to
``OUTBOX_TORTURE_REPORT`` for ``docs/RELIABILITY.md``.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from outbox import ship_path

__all__ = [
    "PROCS",
    "SIZES",
    "pick",
    "Tally",
    "PgCount",
    "count_postgres",
    "execute",
    "outbox_ids",
    "dead_ids",
    "integrity",
    "keyed",
    "Feed",
    "Appender",
    "ShipperRun",
    "CliResult",
    "cli",
    "popen_cli",
    "sigkill",
    "kill_when",
    "file_grew",
    "wait_for",
]

PROCS = Path(__file__).resolve().parent.parent / "procs"

# Every scenario runs bounded (inside `make test`) and full (`make torture`, marked slow).
SIZES = [
    pytest.param("bounded", id="bounded"),
    pytest.param("full", id="full", marks=[pytest.mark.slow, pytest.mark.timeout(3600)]),
]


_N = TypeVar("_N", int, float)


def pick(size: str, bounded: _N, full: _N) -> _N:
    """Return the bounded figure, or the full one times ``OUTBOX_TORTURE_SCALE`` (default 1)."""
    if size == "bounded":
        return bounded
    scaled = full * float(os.environ.get("OUTBOX_TORTURE_SCALE", "1"))
    return type(full)(max(1, round(scaled)) if isinstance(full, int) else scaled)


# -- counting --------------------------------------------------------------------------------------


@dataclass
class PgCount:
    """What Postgres holds: every id (both tables), rows, and repeats of a payload key ``k``."""

    ids: set[str]
    rows: int
    repeated_keys: int

    @property
    def duplicated(self) -> int:
        return (self.rows - len(self.ids)) + self.repeated_keys


async def count_postgres(dsn: str, *, keyed: bool = True) -> PgCount:
    """Count both tables; a missing table counts as empty (a scenario may have dropped it).

    ``keyed``: payloads carry a unique ``k`` (see :func:`keyed`); count its repeats too.
    """
    conn = await asyncpg.connect(dsn)
    try:
        ids: list[str] = []
        repeated = 0
        for table in ("outbox_events", "command_calls"):
            try:
                ids += [r[0] for r in await conn.fetch(f"SELECT id::text FROM {table}")]
            except asyncpg.UndefinedTableError:
                continue
        try:
            repeated = 0 if not keyed else int(
                await conn.fetchval(
                    "SELECT coalesce(sum(n - 1), 0) FROM (SELECT count(*) AS n FROM outbox_events"
                    " WHERE payload ? 'k' GROUP BY payload->>'k') AS keyed"
                )
            )
        except asyncpg.UndefinedTableError:
            pass
        return PgCount(set(ids), len(ids), repeated)
    finally:
        await conn.close()


async def execute(dsn: str, *statements: str) -> None:
    """Run SQL on its own short connection."""
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _read(path: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path, timeout=30)
    try:
        return list(conn.execute(sql).fetchall())
    finally:
        conn.close()


def outbox_ids(path: Path) -> list[str]:
    """Every event id in the outbox file, in seq order (duplicates kept, to be counted)."""
    return [r[0] for r in _read(path, "SELECT id FROM events ORDER BY seq")]


def dead_ids(path: Path) -> set[str]:
    """Ids of the dead letters in the side file."""
    side = ship_path(path)
    if not side.exists():
        return set()
    return {r[0] for r in _read(side, "SELECT id FROM dead WHERE status IN ('dead', 'retry')")}


def integrity(path: Path) -> str:
    """SQLite's own verdict on the file ('ok' when sound)."""
    return str(_read(path, "PRAGMA integrity_check")[0][0])


@dataclass
class Tally:
    """The figures a scenario counted; :meth:`settle` fills them from Postgres and asserts them."""

    scenario: str
    faults: int = 0  # kills, cuts, restarts, damage injected
    fault: str = ""  # what kind
    acknowledged: int = 0  # appends (or imported lines) the caller was told succeeded
    committed: int = 0  # events that reached the outbox, acknowledged or not (a kill can fall between)
    in_postgres: int = 0
    lost: int = 0
    duplicated: int = 0
    dead: int = 0
    expected_dead: int = 0
    notes: dict[str, Any] = field(default_factory=dict)
    settled: bool = False

    async def settle(
        self,
        dsn: str,
        acknowledged: Iterable[str],
        *,
        committed: Iterable[str] | None = None,
        dead: Iterable[str] = (),
        expected_dead: int = 0,
        keyed: bool = True,
    ) -> PgCount:
        """Count Postgres against what was acknowledged and assert the promise, exactly.

        ``committed`` (default: the acknowledged ids) is every event the outbox ended up holding;
        each one must be in Postgres or a dead letter, and nothing may be there twice.
        """
        acked = set(acknowledged)
        held = set(committed) if committed is not None else set(acked)
        dead_set = set(dead)
        pg = await count_postgres(dsn, keyed=keyed)
        self.acknowledged = len(acked)
        self.committed = len(held | acked)
        self.in_postgres = pg.rows
        self.lost = len(acked - pg.ids - dead_set)
        self.duplicated = pg.duplicated
        self.dead = len(dead_set)
        self.expected_dead = expected_dead
        self.settled = True
        print(f"\n{self.line()}")
        assert self.lost == 0, f"{self.lost} acknowledged events are not in Postgres"
        assert self.duplicated == 0, f"{self.duplicated} rows in Postgres are repeats"
        assert self.dead == expected_dead, f"{self.dead} dead letters, expected {expected_dead}"
        assert not (dead_set & pg.ids), "an event is both a dead letter and in Postgres"
        unexplained = pg.ids - held - acked
        assert not unexplained, f"{len(unexplained)} rows in Postgres the outbox never held"
        assert pg.ids | dead_set >= held, f"{len(held - pg.ids - dead_set)} committed events never shipped"
        assert self.in_postgres == self.committed - self.dead
        return pg

    def line(self) -> str:
        extra = "".join(f", {k}={v}" for k, v in self.notes.items())
        return (
            f"{self.scenario}: {self.faults} {self.fault or 'faults'}; acknowledged={self.acknowledged}"
            f" committed={self.committed} in_postgres={self.in_postgres} lost={self.lost}"
            f" duplicated={self.duplicated} dead={self.dead}{extra}"
        )

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("settled")
        return data


# -- real processes --------------------------------------------------------------------------------


def wait_for(predicate: Any, timeout: float, what: str, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"{what}: the process exited with {proc.returncode} first")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.005)


class Appender:
    """``tests/procs/torture_appender.py``: appends until killed, each acknowledged id in a file.

    The id is written (one unbuffered ``write``) only after ``append`` returned, so the file lists
    exactly the acknowledged events, bar a last line the kill may have cut short.
    """

    def __init__(self, path: Path, workdir: Path, env: Mapping[str, str], writer: str, *args: str) -> None:
        self.writer = writer
        self.acks = workdir / f"acks-{writer}"
        self.err = workdir / f"err-{writer}"
        self.ready = workdir / f"ready-{writer}"
        with open(self.err, "ab") as err:
            self.proc = subprocess.Popen(
                [sys.executable, str(PROCS / "torture_appender.py"), str(path), str(self.acks), writer, str(self.ready), *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env=dict(env),
            )

    def wait_ready(self, timeout: float = 60) -> None:
        wait_for(self.ready.exists, timeout, f"appender {self.writer} ready", self.proc)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def wait(self, timeout: float = 120) -> int:
        return self.proc.wait(timeout=timeout)

    def acknowledged(self) -> list[str]:
        if not self.acks.exists():
            return []
        return [line for line in self.acks.read_text().splitlines() if len(line) == 36]

    def stderr(self) -> str:
        return self.err.read_text(errors="replace") if self.err.exists() else ""


class ShipperRun:
    """``shipper run`` (the real sidecar command), its log in a file so a pipe never fills."""

    def __init__(self, path: Path, dsn: str, workdir: Path, env: Mapping[str, str], *options: str, tag: str = "") -> None:
        self.log = workdir / f"shipper{tag}.log"
        self.log.write_bytes(b"")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "shipper"), "run", "--outbox", str(path), "--dsn", dsn, *options],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=dict(env),
            )

    def wait_shipping(self, timeout: float = 60) -> None:
        """Return once the sidecar has opened the outbox and started its loop."""
        wait_for(lambda: b"shipping " in self.log.read_bytes(), timeout, "shipper run started", self.proc)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class CliResult:
    """A finished command line run."""

    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def cli(tool: str, *args: str, env: Mapping[str, str], timeout: float = 300, input: bytes | None = None) -> CliResult:
    """Run the installed ``outbox`` or ``shipper`` console script to completion."""
    proc = subprocess.run(
        [str(Path(sys.executable).parent / tool), *args],
        input=input,
        capture_output=True,
        env=dict(env),
        timeout=timeout,
        check=False,
    )
    return CliResult(proc.returncode, proc.stdout.decode("utf-8", "replace"), proc.stderr.decode("utf-8", "replace"))


def popen_cli(tool: str, *args: str, env: Mapping[str, str], workdir: Path) -> subprocess.Popen[bytes]:
    """Start a console script in the background (to be killed), its output in ``workdir``."""
    with open(workdir / f"{tool}.out", "ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).parent / tool), *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
            env=dict(env),
        )


def sigkill(proc: subprocess.Popen[bytes]) -> bool:
    """Kill -9 ``proc``; return True if it was still running (the kill landed mid-work)."""
    alive = proc.poll() is None
    if alive:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    return alive


async def kill_when(proc: subprocess.Popen[bytes], started: Any, rng: Any, window: float, timeout: float = 60) -> bool:
    """Wait until ``await started()`` says the work has begun, then kill -9 within ``window`` s.

    Returns True if the kill landed while the process was still running. Aiming at the work
    (rather than at a random moment that may fall in the interpreter's start-up) is what
    makes the kills land where the damage could be done.
    """
    deadline = time.monotonic() + timeout
    while proc.poll() is None and not await started():
        if time.monotonic() > deadline:
            raise AssertionError(f"the work did not start within {timeout:g} s")
        await asyncio.sleep(0.002)
    await asyncio.sleep(rng.uniform(0.0, window))
    return sigkill(proc)


def file_grew(path: Path) -> Any:
    """Return an async predicate: has ``path`` (a WAL, say) grown past its size now?

    A WAL only grows while a writer that never checkpoints (the operator commands) writes, so
    this fires at the first page of real work, not at the open that creates an empty WAL.
    """

    def size() -> int:
        try:
            return os.stat(path).st_size
        except FileNotFoundError:
            return 0

    before = size()

    async def grew() -> bool:
        return size() > before

    return grew


def keyed(writer: str, i: int, **extra: Any) -> dict[str, Any]:
    """A payload Postgres can count repeats of: ``k`` is unique per event."""
    return {"k": f"{writer}:{i}", "w": writer, "i": i, **extra}


class Feed:
    """Append in the background, a burst every few milliseconds, like a busy bot; keep the acks.

    ``async with Feed(ob, "w") as feed:`` -- on exit the feed stops and re-raises what broke it.
    """

    def __init__(self, outbox: Any, writer: str, *, burst: int = 20, pause: float = 0.005, topic: str = "t") -> None:
        self.outbox = outbox
        self.writer = writer
        self.burst = burst
        self.pause = pause
        self.topic = topic
        self.acked: list[str] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        i = 0
        while not self._stop.is_set():
            for _ in range(self.burst):
                self.acked.append(await self.outbox.append(self.topic, keyed(self.writer, i)))
                i += 1
            await asyncio.sleep(self.pause)

    async def __aenter__(self) -> Feed:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._stop.set()
        assert self._task is not None
        await asyncio.wait_for(self._task, 60)
