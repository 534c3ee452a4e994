"""What a benchmark receives (:class:`Context`) and what it returns (:class:`Section`).

Results are plain data -- tables of already formatted cells, PASS/FAIL checks, and chart specs
holding the numbers to draw -- so one run can be saved as JSON and the report regenerated from it
without measuring again (``python -m bench --report-from FILE``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from .pg import Postgres

__all__ = ["Context", "Section", "Table", "Check", "Chart", "Benchmark", "section_from_json"]

ROOT = Path(__file__).resolve().parent.parent
_N = TypeVar("_N", int, float)


@dataclass(frozen=True, kw_only=True)
class Table:
    """A markdown table: ``rows`` are already formatted cells."""

    title: str
    headers: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass(frozen=True, kw_only=True)
class Check:
    """A target stated by an issue, and whether this run met it."""

    name: str
    passed: bool
    detail: str


@dataclass(frozen=True, kw_only=True)
class Chart:
    """A chart for :mod:`bench.charts` to draw: ``kind`` picks the renderer, ``data`` its input."""

    filename: str
    title: str
    kind: str
    data: dict[str, Any]


@dataclass(kw_only=True)
class Section:
    """What one benchmark returns: the report's section for it, plus the raw figures."""

    name: str
    title: str
    intro: str = ""
    tables: list[Table] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    charts: list[Chart] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def section_from_json(data: dict[str, Any]) -> Section:
    """Rebuild a :class:`Section` saved by :meth:`Section.to_json`."""
    return Section(
        name=data["name"],
        title=data["title"],
        intro=data.get("intro", ""),
        tables=[Table(**t) for t in data.get("tables", [])],
        checks=[Check(**c) for c in data.get("checks", [])],
        charts=[Chart(**c) for c in data.get("charts", [])],
        notes=list(data.get("notes", [])),
        raw=dict(data.get("raw", {})),
        seconds=float(data.get("seconds", 0.0)),
    )


@dataclass(kw_only=True)
class Context:
    """What every benchmark gets: the scale to run at, a scratch directory, a Postgres.

    ``workdir`` is on the project's own disk (under ``bench/out/``), so every SQLite file a
    benchmark compares lives on the same filesystem.
    """

    quick: bool
    workdir: Path
    postgres: Postgres
    log: Callable[[str], None]

    def scale(self, full: _N, quick: _N) -> _N:
        """Return ``quick`` in a ``--quick`` smoke run, else ``full``."""
        return quick if self.quick else full

    def path(self, name: str) -> Path:
        """Return a fresh path in the scratch directory (any leftover file of that name removed)."""
        p = self.workdir / name
        for suffix in ("", "-wal", "-shm", "-journal", "-ship", "-ship-wal", "-ship-shm"):
            try:
                os.unlink(f"{p}{suffix}")
            except FileNotFoundError:
                pass
        return p

    def child_env(self) -> dict[str, str]:
        """Environment for a benchmark's child processes: the project importable."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
        return env

    @property
    def python(self) -> str:
        return sys.executable


@dataclass(frozen=True, kw_only=True)
class Benchmark:
    """One entry of the registry: a name on the command line and the coroutine that runs it."""

    name: str
    title: str
    target: str | None
    """``"module:function"``, imported only when the benchmark runs; ``None``: planned, not built."""
    needs_postgres: bool = False

    def load(self) -> Callable[[Context], Awaitable[Section]]:
        """Import and return the benchmark's coroutine function."""
        if self.target is None:
            raise LookupError(f"benchmark {self.name!r} is planned but not built yet")
        module_name, _, func = self.target.partition(":")
        module = importlib.import_module(module_name)
        run: Callable[[Context], Awaitable[Section]] = getattr(module, func)
        return run
