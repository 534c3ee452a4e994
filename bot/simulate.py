"""Run the ladder bot on simulated traffic, through discord.py's real dispatch, with no network.

The bot logs in to a :class:`~bot.standin.DiscordStandIn` (``Route.BASE`` points at a loopback
port), and each payload is handed to ``INTERACTION_CREATE``'s parser, the function the gateway
calls. The tree, checks, callbacks, error handler and HTTP responses are discord.py's own.

Overhead is measured the way small costs must be on a shared, noisy machine: blocks with the
command log attached alternate with blocks with it detached (ABBA order), medians are compared,
and the garbage collector's existing objects are frozen. Two latencies per command: *answered*
(dispatch to the response reaching the stand-in, what a user waits for) and *handled* (dispatch
to the end of the command's task, which includes the append made after answering).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord

from discord_outbox import TOPIC, CommandLog
from outbox import Outbox, OutboxReader

from .ladder import Ladder, LadderBot
from .payloads import dispatch
from .standin import DiscordStandIn, pointed_at
from .traffic import Traffic

__all__ = ["SimulationConfig", "SimulationResult", "SimulationError", "simulate", "percentile", "format_report"]

log = logging.getLogger(__name__)


class SimulationError(Exception):
    """The simulation could not run to the end; the message says where it stopped."""


@dataclass(frozen=True, kw_only=True)
class SimulationConfig:
    """What to simulate.

    Parameters
    ----------
    commands:
        Commands run with the command log attached (each should become one row).
    outbox_path:
        The outbox file the log appends to.
    dsn:
        Ship to this Postgres with an in-process shipper, and count the rows that land.
    baseline:
        Also run as many commands with the log detached, in alternating blocks, to compare.
    block, warmup, seed:
        Block size, unlogged warm-up commands, traffic seed.
    command_timeout_s:
        Longest wait for one command to finish before the simulation gives up.
    """

    commands: int
    outbox_path: Path
    dsn: str | None = None
    baseline: bool = True
    block: int = 50
    warmup: int = 100
    seed: int = 1
    command_timeout_s: float = 10.0


@dataclass
class Samples:
    """Latencies (ns) of one mode: logging on or off."""

    handled: list[int] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    by_command: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))


@dataclass
class SimulationResult:
    """What a simulation measured and where its rows landed."""

    config: SimulationConfig
    on: Samples
    off: Samples
    hook_ns: list[int]
    outcomes: Counter[str]
    logged: int
    log_failures: int
    outbox_rows: int
    sample_rows: list[dict[str, Any]]
    pg_rows: int | None = None  # rows added to Postgres command_calls during the run
    ship_seconds: float | None = None
    elapsed_s: float = 0.0


class _Timed:
    """Outermost wrapper of ``tree._call``: note when each command's task is done."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.done: dict[int, asyncio.Future[int]] = {}

    async def __call__(self, interaction: discord.Interaction[Any]) -> None:
        try:
            await self.inner(interaction)
        finally:
            future = self.done.pop(interaction.id, None)
            if future is not None and not future.done():
                future.set_result(time.perf_counter_ns())


async def simulate(config: SimulationConfig) -> SimulationResult:
    """Run the simulation described by ``config`` and return its measurements."""
    if config.commands < 1:
        raise ValueError("commands must be at least 1")
    started = time.perf_counter()
    async with DiscordStandIn() as standin, Outbox(config.outbox_path) as ob:
        rows_before = await _outbox_rows(config.outbox_path)
        with pointed_at(standin.base):
            if config.dsn is None:
                result = await _drive(config, standin, ob)
            else:
                from shipper import Shipper
                from shipper.migrate import migrate

                await migrate(config.dsn)  # fail fast on a bad DSN, rather than retry for a minute
                pg_before = await _pg_rows(config.dsn)
                async with Shipper(config.outbox_path, config.dsn, outbox=ob) as shipper:
                    result = await _drive(config, standin, ob)
                    ship_start = time.perf_counter()
                    await shipper.drain(timeout=60)
                    result.ship_seconds = time.perf_counter() - ship_start
                result.pg_rows = await _pg_rows(config.dsn) - pg_before
    result.outbox_rows, result.outcomes, result.sample_rows = await _new_rows(config.outbox_path, rows_before, 5)
    result.elapsed_s = time.perf_counter() - started
    return result


async def _drive(config: SimulationConfig, standin: DiscordStandIn, ob: Outbox) -> SimulationResult:
    bot = LadderBot(ladder=Ladder.seeded())
    try:
        await bot.login("simulated-token")
        command_log = CommandLog(ob)
        command_log.timings = []
        traffic = Traffic(standin.application_id, seed=config.seed)
        on, off = Samples(), Samples()
        await _run_block(bot, standin, traffic, config.warmup, Samples(), config.command_timeout_s)
        gc.collect()
        gc.freeze()
        try:
            remaining, pair = config.commands, 0
            while remaining > 0:
                n = min(config.block, remaining)
                order = (True, False) if pair % 2 == 0 else (False, True)  # ABBA: drift cancels out
                for logging_on in order if config.baseline else (True,):
                    if logging_on:
                        command_log.attach(bot.tree)
                    try:
                        samples = on if logging_on else off
                        await _run_block(bot, standin, traffic, n, samples, config.command_timeout_s)
                    finally:
                        if logging_on:
                            command_log.detach()
                remaining -= n
                pair += 1
        finally:
            gc.unfreeze()
        stats = command_log.stats
        return SimulationResult(
            config=config,
            on=on,
            off=off,
            hook_ns=command_log.timings,
            outcomes=Counter(),
            logged=stats.logged,
            log_failures=stats.failed,
            outbox_rows=0,
            sample_rows=[],
        )
    finally:
        await bot.close()


async def _run_block(
    bot: LadderBot,
    standin: DiscordStandIn,
    traffic: Traffic,
    n: int,
    samples: Samples,
    timeout: float,
) -> None:
    timed = _Timed(bot.tree._call)
    setattr(bot.tree, "_call", timed)
    try:
        for _ in range(n):
            name, payload = traffic.next()
            interaction_id = int(payload["id"])
            done = asyncio.get_running_loop().create_future()
            timed.done[interaction_id] = done
            answered = standin.expect_response(interaction_id)
            start = time.perf_counter_ns()
            dispatch(bot, payload)
            end = await _finished(done, name, timeout)
            if not answered.done():
                standin.forget(interaction_id)
                raise SimulationError(f"/{name} finished without answering the interaction")
            exchange = answered.result()
            samples.handled.append(end - start)
            samples.answered.append(exchange.at_ns - start)
            samples.by_command[name].append(end - start)
    finally:
        if getattr(timed.inner, "__self__", None) is bot.tree:
            del bot.tree._call  # the class's own method again
        else:
            setattr(bot.tree, "_call", timed.inner)


async def _finished(done: asyncio.Future[int], name: str, timeout: float) -> int:
    """Wait for the command's task to end; return when it ended (``perf_counter_ns``)."""
    try:
        async with asyncio.timeout(timeout):  # not wait_for: on 3.11 it loses a Ctrl-C landing as the command ends
            return await asyncio.shield(done)
    except asyncio.TimeoutError:
        raise SimulationError(f"/{name} did not finish within {timeout:g} s") from None
    except asyncio.CancelledError:  # Ctrl-C: the command in flight ends before anything closes
        await _let_finish(done, timeout)
        raise


async def _let_finish(done: asyncio.Future[int], timeout: float) -> None:
    """Wait (at most ``timeout``) for the command in flight, so that its answer reaches the
    stand-in and its row the outbox; else closing the bot's HTTP session under it makes discord.py
    log a traceback for a command that did nothing wrong."""
    try:
        async with asyncio.timeout(timeout):
            await asyncio.shield(done)
    except (asyncio.TimeoutError, asyncio.CancelledError):
        pass


async def _outbox_rows(path: Path) -> int:
    if not path.exists():
        return 0
    async with OutboxReader(path) as reader:
        return await reader.count_events(topic=TOPIC)


async def _new_rows(path: Path, skip: int, keep: int) -> tuple[int, Counter[str], list[dict[str, Any]]]:
    """Count the rows after the first ``skip``, their outcomes, and keep the last ``keep``."""
    count, outcomes, last = 0, Counter[str](), deque[dict[str, Any]](maxlen=keep)
    async with OutboxReader(path) as reader:
        async for chunk in reader.iter_events(topic=TOPIC):
            for event in chunk:
                if skip:
                    skip -= 1
                    continue
                row = json.loads(event.payload)
                count += 1
                outcomes[str(row.get("outcome"))] += 1
                last.append(row)
    return count, outcomes, list(last)


async def _pg_rows(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM command_calls"))
    finally:
        await conn.close()


def percentile(values: list[int] | list[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of ``values``, nearest rank."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[index])


def _us(ns: float) -> str:
    return f"{ns / 1000:8.1f} us"


def format_report(result: SimulationResult) -> list[str]:
    """Human-readable lines describing ``result``."""
    c = result.config
    lines = [
        f"ran {c.commands} commands with the command log attached"
        + (f" and {len(result.off.handled)} without, in alternating blocks of {c.block}" if c.baseline else "")
        + f" (after {c.warmup} warm-up), gc frozen, in {result.elapsed_s:.1f} s",
        "",
        f"{'per command':<24}{'handled p50':>14}{'p99':>12}{'answered p50':>15}{'p99':>12}",
    ]
    modes = [("logging off", result.off), ("logging on", result.on)] if c.baseline else [("logging on", result.on)]
    for label, s in modes:
        lines.append(
            f"{label:<24}{_us(percentile(s.handled, 50)):>14}{_us(percentile(s.handled, 99)):>12}"
            f"{_us(percentile(s.answered, 50)):>15}{_us(percentile(s.answered, 99)):>12}"
        )
    if c.baseline:
        on, off = result.on, result.off
        lines.append(
            f"{'overhead (on - off)':<24}"
            f"{_us(percentile(on.handled, 50) - percentile(off.handled, 50)):>14}"
            f"{_us(percentile(on.handled, 99) - percentile(off.handled, 99)):>12}"
            f"{_us(percentile(on.answered, 50) - percentile(off.answered, 50)):>15}"
            f"{_us(percentile(on.answered, 99) - percentile(off.answered, 99)):>12}"
        )
    lines.append(
        f"{'the hook alone':<24}{_us(percentile(result.hook_ns, 50)):>14}{_us(percentile(result.hook_ns, 99)):>12}"
        "   (payload + outbox append, timed inside)"
    )
    lines += ["", f"{'handled p50 by command':<24}{'n':>6}{'off':>14}{'on':>12}"]
    for name in sorted(result.on.by_command):
        on_ns = result.on.by_command[name]
        off_ns = result.off.by_command.get(name, [])
        lines.append(f"  {name:<22}{len(on_ns):>6}{_us(percentile(off_ns, 50)):>14}{_us(percentile(on_ns, 50)):>12}")
    outcomes = ", ".join(f"{k} {v}" for k, v in result.outcomes.most_common())
    lines += ["", f"logged {result.logged}, failed to log {result.log_failures}; outcomes: {outcomes}"]
    lines.append(f"outbox: {result.outbox_rows} new {TOPIC} rows in {os.fspath(c.outbox_path)}")
    if result.pg_rows is not None:
        lines.append(
            f"postgres: {result.pg_rows} new rows in table command_calls"
            f" (in-process shipper drained the rest in {result.ship_seconds or 0:.2f} s)"
        )
    lines.append("last rows logged:")
    lines += [f"  {json.dumps(row, ensure_ascii=False)}" for row in result.sample_rows]
    return lines
