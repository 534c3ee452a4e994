"""Shipping throughput: the shipper draining a backlog, against raw COPY of the same rows.

Each method runs in a child process of its own (:mod:`bench.procs.drainer`) on the same outbox
file, in turn, the order rotating from repeat to repeat; between trials the outbox's cursor is
moved back and the Postgres tables emptied and checkpointed. The ratio that PASSes or FAILs is
the median of the per-repeat ratios (each repeat measures both side by side). The shipper's own
steps are timed batch by batch, CPU is counted on both sides of the socket, and the shipper's
resident memory is sampled through the drain.
"""

from __future__ import annotations

import importlib.util
import time
from typing import Any

import asyncpg

from shipper.progress import NOTE_EVERY_S

from .backlog import PLAIN_TOPIC, RAW_TABLES, ROUTE_TOPIC, fill, prepare_database, reset_database, rewind
from .children import Child, cpu_delta, tree_cpu
from .core import Chart, Check, Context, Section
from .pg import LOOPBACK_DSN, server_version
from .ship_report import METHODS, Scenario, breakdown_table, cpu_table, memory_table, throughput_table
from .timing import fmt_range, fmt_ratio, median

__all__ = ["run"]

TARGET_RATIO = 0.9  # issue 6: a drain at >= 0.9x raw COPY of the same rows


async def _count(dsn: str, table: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
    finally:
        await conn.close()


async def _trial(ctx: Context, sc: Scenario, mode: str) -> dict[str, Any]:
    await rewind(sc.path)
    await reset_database(sc.dsn)
    child = await Child.start(ctx, "drainer", mode, str(sc.path), sc.dsn)
    try:
        postmaster = ctx.postgres.postmaster_pid() if sc.local else None
        aux0 = tree_cpu(postmaster)
        await child.go()
        result = await child.result(timeout=60 + sc.n / 5000)
    finally:
        await child.kill()
    result["pg_aux_cpu_s"] = cpu_delta(aux0, tree_cpu(postmaster)) if postmaster else None
    landed = await _count(sc.dsn, RAW_TABLES[sc.table] if mode == "copy" else sc.table)
    if landed != sc.n or result["rows"] != sc.n:
        raise RuntimeError(f"{sc.key}/{mode}: {sc.n} events pending, {result['rows']} sent, {landed} rows in Postgres")
    return result


async def _scenarios(ctx: Context) -> tuple[list[Scenario], list[str], list[str]]:
    small, big = ctx.scale(100_000, 20_000), ctx.scale(1_000_000, 100_000)
    reps_small, reps_big = ctx.scale(7, 2), ctx.scale(3, 1)
    dsn = await ctx.postgres.create_database("bench_ship")
    await prepare_database(dsn)
    dsns = [dsn]
    events, commands, large = ctx.path("ship-events.db"), ctx.path("ship-commands.db"), ctx.path("ship-large.db")
    routed = ctx.path("ship-route.db")
    t0 = time.perf_counter()
    await fill(events, small, PLAIN_TOPIC)
    await fill(commands, small, "command_calls")
    await fill(routed, small, ROUTE_TOPIC)
    await fill(large, big, PLAIN_TOPIC, seed=11)
    ctx.log(f"  filled four outboxes ({3 * small + big:,} events) in {time.perf_counter() - t0:.0f} s")
    where = ctx.postgres.description
    out = [
        Scenario(key="events", label=f"{small:,} events -> outbox_events", path=events, n=small, dsn=dsn,
                 table="outbox_events", repeats=reps_small,
                 modes=("ship", "ship_serial", "sink", "sink_reading", "copy")),
        Scenario(key="commands", label=f"{small:,} command_calls events -> command_calls (typed columns)",
                 path=commands, n=small, dsn=dsn, table="command_calls", repeats=reps_small,
                 modes=("ship", "ship_text", "ship_stdlib", "sink", "copy")),
        Scenario(key="route", label=f"{small:,} events -> a user route ({ROUTE_TOPIC}, the same typed columns)",
                 path=routed, n=small, dsn=dsn, table=ROUTE_TOPIC, repeats=reps_small,
                 modes=("ship", "ship_text", "ship_stdlib", "sink", "copy")),
        Scenario(key="large", label=f"{big:,} events -> outbox_events", path=large, n=big, dsn=dsn,
                 table="outbox_events", repeats=reps_big),
    ]
    notes = [f"Postgres: {where}."]
    if importlib.util.find_spec("orjson") is None or importlib.util.find_spec("msgspec") is None:
        notes.append("orjson or msgspec is not installed here (`make bench` installs the `fast` extra): "
                     "*the shipper* is then closer to *the shipper without the fast extra*.")
    tcp = await server_version(LOOPBACK_DSN, timeout=2)
    if tcp:
        tcp_dsn = await ctx.postgres.create_database("bench_ship", dsn=LOOPBACK_DSN)
        await prepare_database(tcp_dsn)
        dsns.append(tcp_dsn)
        out.insert(1, Scenario(key="events_tcp", label=f"{small:,} events -> outbox_events, {tcp} over TCP loopback",
                               path=events, n=small, dsn=tcp_dsn, table="outbox_events", repeats=reps_small,
                               local=False))
        notes.append(f"The TCP row ships the same file to the machine's own {tcp} on 127.0.0.1 (shared with "
                     "others; not tuned), to show the ratio against a slower Postgres.")
    return out, dsns, notes


async def run(ctx: Context) -> Section:
    started = time.perf_counter()
    scenarios, dsns, notes = await _scenarios(ctx)
    trials: dict[str, dict[str, list[dict[str, Any]]]] = {sc.key: {m: [] for m in sc.modes} for sc in scenarios}
    try:
        for sc in scenarios:
            # An untimed first trial: in earlier runs the first drain of a backlog ran slower than
            # the rest, and the rotation below hands that first trial to the shipper every time.
            await _trial(ctx, sc, "copy")
            for r in range(sc.repeats):
                order = sc.modes[r % len(sc.modes):] + sc.modes[: r % len(sc.modes)]
                for mode in order:
                    res = await _trial(ctx, sc, mode)
                    trials[sc.key][mode].append(res)
                ctx.log(f"  {sc.key} repeat {r + 1}/{sc.repeats}: " + ", ".join(
                    f"{m} {trials[sc.key][m][-1]['rows'] / trials[sc.key][m][-1]['seconds']:,.0f}/s" for m in sc.modes))
    finally:
        for dsn in dsns:
            await ctx.postgres.drop_database(dsn)

    section = Section(name="ship", title="Shipping throughput vs raw COPY", intro=_intro(scenarios))
    ratios = {sc.key: _ratios(trials[sc.key]) for sc in scenarios}
    for sc in scenarios:
        if sc.key in ("events", "large", "commands", "route"):
            rs = ratios[sc.key]
            what = {"commands": " command_calls events (typed columns)", "route": " events into a user route"}.get(sc.key, " events")
            section.checks.append(Check(
                name=f"drain of {sc.n:,}{what} >= {TARGET_RATIO:g}x raw COPY of the same rows",
                passed=median(rs) >= TARGET_RATIO,
                detail=f"{fmt_ratio(median(rs))} (repeats {fmt_range(rs, fmt_ratio)}): "
                       f"{_rate(trials[sc.key]['ship']):,.0f} vs {_rate(trials[sc.key]['copy']):,.0f} rows/s",
            ))
    mem = _memory(scenarios, trials)
    if mem is not None:
        section.checks.append(mem)
    section.tables.append(throughput_table(scenarios, trials, ratios))
    section.tables.append(breakdown_table([sc for sc in scenarios if sc.key != "events_tcp"], trials))
    section.notes += notes + _diagnosis(trials) + _typed_diagnosis(trials)
    section.tables.append(cpu_table(scenarios, trials))
    section.tables.append(memory_table(scenarios, trials))
    section.charts.append(_throughput_chart(scenarios, trials))
    section.charts.append(_rss_chart(scenarios, trials))
    section.raw = {"trials": {k: {m: [{x: y for x, y in t.items() if x != "rss_series"} for t in ts]
                                  for m, ts in v.items()} for k, v in trials.items()}}
    section.seconds = time.perf_counter() - started
    return section


def _rate(ts: list[dict[str, Any]]) -> float:
    return median([t["rows"] / t["seconds"] for t in ts])


def _ratios(by_mode: dict[str, list[dict[str, Any]]]) -> list[float]:
    return [(s["rows"] / s["seconds"]) / (c["rows"] / c["seconds"]) for s, c in zip(by_mode["ship"], by_mode["copy"])]


def _memory(scenarios: list[Scenario], trials: dict[str, dict[str, list[dict[str, Any]]]]) -> Check | None:
    """Does the shipper's memory grow with the backlog? Judged within each 1,000,000-event drain:
    its peak RSS while the second half shipped against its peak while the first half did (the
    batches grow to their full size in the first; a quick run's first tenth was still ramping up).

    It used to compare the 1,000,000-event drains with the 100,000-event ones, separate
    processes: the peaks of seven repeats of the same 100,000-event drain spread by 9% (51.7
    to 56.5 MiB in one run), so a 10% margin measured that spread as much as any growth.
    Within one drain, memory that grew with the events shipped would still show, and the
    process, its batches and its allocator are the same throughout. The cross-drain peaks stay
    in the detail."""
    small = next((sc for sc in scenarios if sc.key == "events"), None)
    large = next((sc for sc in scenarios if sc.key == "large"), None)
    if small is None or large is None:
        return None

    def peak(ts: list[dict[str, Any]]) -> float:
        return median([max(rss for _, _, rss in t["rss_series"]) for t in ts])

    def halves(t: dict[str, Any]) -> float:
        series = t["rss_series"]
        first = [rss for _, rows, rss in series if rows <= large.n // 2] or [series[0][2]]
        second = [rss for _, rows, rss in series if rows > large.n // 2] or first
        return max(second) / max(first)

    growth = [halves(t) for t in trials["large"]["ship"]]
    p_small, p_large = peak(trials["events"]["ship"]), peak(trials["large"]["ship"])
    start = median([t["rss_start"] for t in trials["large"]["ship"]])
    return Check(
        name="shipper memory flat while draining",
        passed=median(growth) <= 1.1,
        detail=f"draining {large.n:,} events, peak RSS while the second half shipped {median(growth):.2f}x the "
               f"first half's (repeats {fmt_range(growth, lambda x: f'{x:.2f}x')}; flat = within 10%); "
               f"peak {p_large / 2**20:.0f} MiB, against {p_small / 2**20:.0f} MiB in the separate "
               f"{small.n:,}-event drains; {start / 2**20:.0f} MiB when the {large.n:,}-event drain began",
    )


def _diagnosis(trials: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """What this run's side-by-side figures say about where the shipper's time goes."""
    ev = trials.get("events", {})
    if not all(m in ev for m in ("ship", "ship_serial", "sink", "sink_reading", "copy")):
        return []

    def r(a: str, b: str) -> str:
        return fmt_ratio(median([(x["rows"] / x["seconds"]) / (y["rows"] / y["seconds"]) for x, y in zip(ev[a], ev[b])]))

    def ms(mode: str, key: str) -> str:  # per 1,000 events, as the breakdown table (batch sizes differ)
        return f"{median([t['steps'].get(key, 0.0) / t['rows'] * 1e6 for t in ev[mode]]):.2f} ms"

    def read(mode: str, key: str) -> str:  # per 1,000 events
        if key == "alone":
            return f"{median([median(t['read_alone']) * 1000 for t in ev[mode]]):.2f} ms"
        return f"{median([t['steps']['read_pending'] / t['rows'] * 1e6 for t in ev[mode]]):.2f} ms"

    notes = (
        sum(t["calls"].get("advance", 0) for t in ev["ship"]),
        sum(t["batches"] for t in ev["ship"]),
    )
    return [
        f"The exactly-once transaction alone (sink from memory) ran at {r('sink', 'copy')} of raw COPY: "
        "the same single round trip per batch, plus the ledger row's INSERT and the routing of "
        f"events to rows ({ms('sink', 'route')} per 1,000 events, which the shipper does while the previous "
        "batch is in flight).",
        f"Reading the next batch from the outbox beside each send, the same sink ran at "
        f"{r('sink_reading', 'sink')} of itself. The read runs on the event loop's thread, 256 rows "
        "at a time, once the COPY has been sent: it fills the time the loop would otherwise spend "
        f"waiting for Postgres. In the shipper reading took {read('ship', 'run')} per 1,000 events that "
        f"way, {read('ship', 'alone')} alone.",
        f"The shipper with its read-ahead on ran at {r('ship', 'ship_serial')} of the same shipper with "
        f"it off (each batch read, routed and sent one after the other: {ms('ship_serial', 'ship_once')} "
        f"per 1,000 events in `_ship_once`). Progress notes in the side file ran in the background, "
        f"{notes[0]} for {notes[1]} batches over the repeats (at most one per {NOTE_EVERY_S:g} s while busy; "
        "Postgres's ledger is what a restarted shipper resumes from).",
    ]


def _typed_diagnosis(trials: dict[str, dict[str, list[dict[str, Any]]]]) -> list[str]:
    """What the binary COPY of typed rows (shipper.typedrows) did, against the same shipper's COPY text."""
    out = []
    for key in ("commands", "route"):
        tr = trials.get(key, {})
        if not tr.get("ship") or not tr.get("ship_text"):
            continue
        ratio = median([(a["rows"] / a["seconds"]) / (b["rows"] / b["seconds"]) for a, b in zip(tr["ship"], tr["ship_text"])])

        def cpu(mode: str, field: str) -> str:
            values = [t[field] * 1e6 / t["rows"] for t in tr[mode] if t.get(field) is not None]
            return f"{median(values):.2f}" if values else "?"

        out.append(
            f"{key}: the shipper sending typed rows in a binary COPY ran at {fmt_ratio(ratio)} of itself sending "
            f"COPY text; CPU per 1,000 events, client {cpu('ship', 'cpu_s')} against {cpu('ship_text', 'cpu_s')} ms, "
            f"Postgres backend {cpu('ship', 'backend_cpu_s')} against {cpu('ship_text', 'backend_cpu_s')} ms."
        )
    return out


def _throughput_chart(scenarios: list[Scenario], trials: dict[str, dict[str, list[dict[str, Any]]]]) -> Chart:
    series = []
    for mode in ("ship", "sink", "copy"):
        values, low, high = [], [], []
        for sc in scenarios:
            rates = [t["rows"] / t["seconds"] for t in trials[sc.key].get(mode, [])] or [0.0]
            values.append(median(rates))
            low.append(min(rates))
            high.append(max(rates))
        series.append({"label": METHODS[mode], "values": values, "low": low, "high": high})
    return Chart(
        filename="bench-ship-throughput.png",
        title="Draining a backlog into Postgres: the shipper against raw COPY of the same rows",
        kind="bars",
        data={"unit": "rows/s (median; bars span the repeats)", "categories": [sc.label for sc in scenarios],
              "series": series, "log": False},
    )


def _rss_chart(scenarios: list[Scenario], trials: dict[str, dict[str, list[dict[str, Any]]]]) -> Chart:
    series = []
    for sc in scenarios:
        if sc.key not in ("events", "large"):
            continue
        for i, t in enumerate(trials[sc.key]["ship"]):
            pts = t["rss_series"]
            series.append({"label": f"backlog of {sc.n:,}, run {i + 1}", "x": [p[1] for p in pts],
                           "y": [p[2] / 2**20 for p in pts]})
    return Chart(
        filename="bench-ship-rss.png",
        title="The shipper's resident memory while draining (sampled every 50 ms)",
        kind="lines",
        data={"x_label": "events shipped so far", "y_label": "RSS (MiB)", "log_y": False,
              "series": series, "markers": False, "y_from_zero": True},
    )


def _intro(scenarios: list[Scenario]) -> str:
    reps = sorted({sc.repeats for sc in scenarios})
    return (
        "A backlog of pending events (~200 bytes of command-like JSON each) is drained into Postgres "
        "by three methods, each in a child process of its own reading the same outbox file: "
        "**the shipper** (`Shipper(path, dsn)` with its defaults: batches of 1,000 events, growing "
        "while a backlog waits until a transaction's fixed cost is about 5% of one, each one "
        "transaction holding a ledger row and a COPY, sent as one query; the next batch read "
        "ahead while one is in flight; orjson and msgspec installed, as the `fast` extra does, and "
        "for the typed backlogs also without them), timed "
        "from its first batch to the last commit; **`PostgresSink.send` from memory**, the same "
        "transactions with the events read beforehand (the sink without the loop); and **raw COPY**: "
        "the same rows, built beforehand, sent with asyncpg `copy_records_to_table` in 1,000-row "
        "batches (one implicit transaction each) into a table created `LIKE outbox_events INCLUDING "
        "ALL` -- not exactly-once, the floor. Before every trial the outbox's cursor is moved back, "
        "every table emptied and a `CHECKPOINT` taken; every trial's rows are counted in Postgres "
        "afterwards. Every child sets its garbage collector as `shipper run` and `shipper drain` "
        "do (`shipper.collector`: young collections 50,000 allocations apart), the raw COPY's "
        "too. Each backlog starts with one untimed raw COPY trial: the first drain of a "
        "backlog ran slower than the rest in earlier runs, and the rotation would hand it to the "
        "shipper every time. Methods take turns, the order rotating; "
        f"{' or '.join(str(r) for r in reps)} "
        "repeats per backlog. Ratios are medians of the per-repeat ratios. Two diagnostics run on "
        "the first backlog: the shipper with its read-ahead turned off (each batch read when it is "
        "needed; the loop otherwise unchanged), and the sink from memory reading the next batch from "
        "the outbox beside each send, as the read-ahead does (and throwing it away)."
    )
