"""The discord.py command path, end to end: what logging adds to each slash command.

Runs the bot's own simulation (:func:`bot.simulate.simulate`): the ladder bot logged in to a
loopback stand-in for Discord's API, every command dispatched through discord.py's real
``INTERACTION_CREATE`` parser, tree, checks and callbacks, answered over HTTP. The simulation
alternates blocks with the command log attached and detached (ABBA), so each run measures on
and off side by side; this benchmark runs it under three shipping set-ups, several times each.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from bot.simulate import SimulationConfig, SimulationResult, percentile, simulate
from shipper.wakeup import LINGER_S

from .backlog import wait_shipped
from .discord_kinds import KINDS, KindSamples, measure_kinds
from .children import Child
from .core import Chart, Check, Context, Section, Table
from .timing import distribution, fmt_range, fmt_us, median

__all__ = ["run"]

MODES = {
    "outbox": "outbox only (no shipper running)",
    "sidecar": "outbox + a sidecar shipper process",
    "inprocess": "outbox + in-process shipper",
}


@dataclass(frozen=True, kw_only=True)
class Run:
    mode: str
    result: SimulationResult
    shipped: int | None


def _q(ns: list[int], q: float) -> float:
    return percentile(ns, q) / 1000  # us


async def _one(ctx: Context, mode: str, commands: int, dsn: str, name: str) -> Run:
    path = ctx.path(name)
    side: Child | None = None
    try:
        if mode == "sidecar":
            side = await Child.start(ctx, "sidecar", str(path), dsn)
        config = SimulationConfig(commands=commands, outbox_path=path, dsn=dsn if mode == "inprocess" else None)
        result = await simulate(config)
        shipped = result.pg_rows
        if side is not None:
            await wait_shipped(path, 60)
            side.terminate()
            shipped = (await side.result(timeout=60))["shipped"]
    finally:
        if side is not None:
            await side.kill()
    return Run(mode=mode, result=result, shipped=shipped)


async def run(ctx: Context) -> Section:
    started = time.perf_counter()
    commands = ctx.scale(3000, 300)
    repeats = ctx.scale(3, 1)
    dsn = await ctx.postgres.create_database("bench_discord")
    runs: list[Run] = []
    try:
        keys = list(MODES)
        for r in range(repeats):
            for mode in keys[r % len(keys):] + keys[: r % len(keys)]:
                one = await _one(ctx, mode, commands, dsn, f"discord-{mode}-{r}.db")
                runs.append(one)
                res = one.result
                ctx.log(f"  {mode:9s} run {r + 1}: handled p50 off {_q(res.off.handled, 50):.0f} us, "
                        f"on {_q(res.on.handled, 50):.0f} us; hook p50 {_q(res.hook_ns, 50):.1f} us")
    finally:
        await ctx.postgres.drop_database(dsn)
    per_kind = ctx.scale(2000, 200)
    kinds = await measure_kinds(ctx.path("discord-kinds.db"), per_kind=per_kind)
    for kind, k in kinds.items():
        ctx.log(f"  {kind:9s}: handled p50 off {_q(k.off, 50):.0f} us, on {_q(k.on, 50):.0f} us; hook p50 {_q(k.hook, 50):.1f} us")
    section = _section(runs, commands, repeats, time.perf_counter() - started)
    section.tables.append(_kinds_table(kinds, per_kind))
    section.raw["kinds"] = {kind: {"off_p50_us": _q(k.off, 50), "on_p50_us": _q(k.on, 50), "hook_p50_us": _q(k.hook, 50),
                                   "hook_p99_us": _q(k.hook, 99)} for kind, k in kinds.items()}
    return section


def _kinds_table(kinds: dict[str, KindSamples], per_kind: int) -> Table:
    rows = []
    for kind in KINDS:
        k = kinds[kind]
        off, on = _q(k.off, 50), _q(k.on, 50)
        rows.append([kind, fmt_us(off), fmt_us(on), f"**{_signed(on - off)}**",
                     f"{fmt_us(_q(k.hook, 50))} / {fmt_us(_q(k.hook, 99))}", f"{len(k.hook):,}"])
    return Table(
        title="Per kind of interaction: the hook's cost (one commands.Bot, outbox only)",
        headers=["kind", "off: handled p50", "on: handled p50", "overhead p50", "the hook alone p50 / p99", "logged"],
        rows=rows,
        note=f"`bench/discord_kinds.py`: a slash command, a prefix command (`MESSAGE_CREATE`, `ctx.send`) and a "
             f"persistent view's button, {per_kind:,} of each with `log_commands(bot, outbox)` attached and as many "
             "detached, in alternating blocks, collector frozen. Handled: dispatch to the end of discord.py's task.",
    )


def _section(runs: list[Run], commands: int, repeats: int, seconds: float) -> Section:
    rows = []
    for mode, label in MODES.items():
        rs = [x.result for x in runs if x.mode == mode]
        over50 = [_q(r.on.handled, 50) - _q(r.off.handled, 50) for r in rs]
        over99 = [_q(r.on.handled, 99) - _q(r.off.handled, 99) for r in rs]
        ans50 = [_q(r.on.answered, 50) - _q(r.off.answered, 50) for r in rs]
        shipped = [x.shipped for x in runs if x.mode == mode]
        rows.append([
            label,
            f"{fmt_us(median([_q(r.off.handled, 50) for r in rs]))} / {fmt_us(median([_q(r.off.handled, 99) for r in rs]))}",
            f"{fmt_us(median([_q(r.on.handled, 50) for r in rs]))} / {fmt_us(median([_q(r.on.handled, 99) for r in rs]))}",
            f"**{_signed(median(over50))}**",
            fmt_range(over50, _signed),
            _signed(median(over99)),
            _signed(median(ans50)),
            f"{fmt_us(median([_q(r.hook_ns, 50) for r in rs]))} / {fmt_us(median([_q(r.hook_ns, 99) for r in rs]))}",
            f"{sum(r.logged for r in rs):,} / " + (f"{sum(s or 0 for s in shipped):,}" if any(s is not None for s in shipped) else "-"),
        ])
    section = Section(
        name="discord",
        title="The discord.py command path, end to end",
        intro=(
            "The ladder bot (`bot/`) on simulated traffic, through discord.py's real dispatch: each "
            "slash command payload goes to the gateway's `INTERACTION_CREATE` parser, then discord.py's "
            "command tree, checks, the command's callback and its HTTP response to a loopback stand-in "
            "for Discord's API. `bot.simulate.simulate` runs blocks of commands with the command log "
            "attached and detached in turn (ABBA, collector frozen), so every run measures on and off "
            f"side by side; {commands:,} commands each way per run, {repeats} run(s) per set-up, the "
            "set-ups taking turns. *Handled* is dispatch to the end of the command's task (which holds "
            "the append, made after the answer); *answered* is dispatch to the response reaching the "
            "stand-in, what a user waits for. Three set-ups: the outbox alone (a sidecar would ship "
            "later), a sidecar shipper process shipping the same file meanwhile (competing for the two "
            "cores), and the shipper in the bot's own process (`Shipper(outbox=ob)`, sharing its loop)."
        ),
    )
    section.tables.append(Table(
        title="Per command: logging off vs on",
        headers=["set-up", "off: handled p50 / p99", "on: handled p50 / p99", "overhead p50", "p50 overhead over runs",
                 "overhead p99", "overhead to the answer, p50", "the hook alone p50 / p99", "logged / shipped"],
        rows=rows,
        note="Overheads are on minus off, per run, then the median over runs. The hook alone is timed "
             "inside the command log (building the row and `Outbox.append`). p99 differences of a few "
             "thousand commands are noisy on this machine; read the p50s.",
    ))
    def over(mode: str) -> float:
        rs = [x.result for x in runs if x.mode == mode]
        return median([_q(r.on.handled, 50) - _q(r.off.handled, 50) for r in rs])

    section.checks.append(Check(
        name="in-process shipper: overhead per command (p50) within 2x of the sidecar's",
        passed=over("inprocess") <= 2 * over("sidecar"),
        detail=f"{_signed(over('inprocess'))} vs {_signed(over('sidecar'))} ({over('inprocess') / over('sidecar'):.2f}x)"
        if over("sidecar") > 0 else f"{_signed(over('inprocess'))} vs {_signed(over('sidecar'))}",
    ))
    section.notes.append(
        f"The in-process shipper added {_signed(over('inprocess') - over('outbox'))} per command (p50) to "
        "the outbox alone in this run: woken by the appends, it gathers those that keep coming for up "
        f"to {LINGER_S * 1000:g} ms (`shipper/wakeup.py`), then reads and sends them as one batch on the bot's event "
        "loop, between commands. A sidecar process shipping the same file added "
        f"{_signed(over('sidecar') - over('outbox'))}."
    )
    section.charts.append(Chart(
        filename="bench-discord.png",
        title="Handled latency per slash command, logging off vs on (log scale)",
        kind="latency_distribution",
        data={"unit": "us", "series": [
            s
            for mode, label in MODES.items()
            for s in (
                {"label": f"{label}: off", "dist": distribution([x for r in runs if r.mode == mode for x in r.result.off.handled])},
                {"label": f"{label}: on", "dist": distribution([x for r in runs if r.mode == mode for x in r.result.on.handled])},
            )
        ]},
    ))
    section.raw = {"runs": [
        {"mode": x.mode, "shipped": x.shipped, "logged": x.result.logged, "failures": x.result.log_failures,
         "off_p50_us": _q(x.result.off.handled, 50), "on_p50_us": _q(x.result.on.handled, 50),
         "off_p99_us": _q(x.result.off.handled, 99), "on_p99_us": _q(x.result.on.handled, 99),
         "hook_p50_us": _q(x.result.hook_ns, 50)} for x in runs
    ]}
    section.seconds = seconds
    return section


def _signed(us: float) -> str:
    return ("+" if us >= 0 else "-") + fmt_us(abs(us))
