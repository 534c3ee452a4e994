"""The ``outbox`` command line's local commands: status, export, import, dead, prune.

These need the outbox file only. The commands that talk to Postgres (``replay``, ``verify``) are
added to this group by ``shipper.outbox_cli``, which is also the console script's entry point, so
that this package never imports a database driver.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import sys
import uuid
from collections.abc import Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

import click

from . import maintenance
from .clilog import log_to_stderr
from .clitools import (
    CONTEXT_SETTINGS,
    EXIT_CODES_HELP,
    EXIT_OUTBOX,
    CliGroup,
    FilePath,
    TimeType,
    check_range,
    echo_json,
    path_argument,
    progress,
    range_options,
    run,
    warn,
)
from .errors import OutboxError, OutboxTextError
from .jsonl import ImportSummary, export_events, import_events
from .reader import DeadLetter, Event, OutboxReader, Status
from .report import counted, dead_letter_json, render_dead_letters, render_status
from .schema import ship_path

__all__ = ["outbox", "main"]


@click.group(cls=CliGroup, context_settings=CONTEXT_SETTINGS, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="discord-outbox", message="%(prog)s %(version)s")
def outbox() -> None:
    """Inspect, export, import and repair a local event outbox.

    PATH is the outbox file (the one your bot appends to); it may also come from OUTBOX_PATH.
    TIME is ISO 8601 (2024-05-01T12:00:00Z; UTC when no zone is given) or an age meaning that
    long ago: 90s, 15m, 2h, 7d, 1w.

    \b
    Examples:
      outbox status events.db
      outbox export events.db --since 2h > events.jsonl
      outbox import restored.db events.jsonl
      outbox verify events.db --dsn postgresql://bot@db/bot
    """


assert isinstance(outbox, CliGroup)
outbox.register_error(OutboxError, EXIT_OUTBOX)
outbox.register_error(OSError, EXIT_OUTBOX)


# -- status --------------------------------------------------------------------------------------


async def _status(path: Path, per_topic: bool) -> Status:
    async with OutboxReader(path) as reader:
        return await reader.status(per_topic=per_topic)


@outbox.command(epilog=EXIT_CODES_HELP)
@path_argument
@click.option("--json", "as_json", is_flag=True, help="Print stable JSON for scripts.")
@click.option("--topics/--no-topics", default=True, show_default=True, help="Count per topic (scans the whole file).")
def status(path: Path, as_json: bool, topics: bool) -> None:
    """Show pending, shipped and dead counts, per topic.

    Also the age of the oldest pending event, the bytes on disk and the last shipping error.

    \b
    Examples:
      outbox status events.db
      outbox status events.db --json | jq .pending
    """
    snapshot = run(_status(path, topics))
    if as_json:
        echo_json(snapshot.as_json() | {"last_error_at": _iso(snapshot.last_error_at), "path": str(path)})
    else:
        click.echo(render_status(snapshot, str(path)))


def _iso(us: int | None) -> str | None:
    return None if us is None else maintenance.format_time(us)


# -- export / import -----------------------------------------------------------------------------


async def _export(path: Path, out: Any, since: int | None, until: int | None, topic: str | None) -> tuple[int, int]:
    """Export; return how many events were written and how many left out, unreadable."""
    left_out = 0

    def unreadable(event: Event, why: str) -> None:
        nonlocal left_out
        left_out += 1
        warn(f"left out seq {event.seq} (id {event.id}): {why}")

    async with OutboxReader(path) as reader:
        total = await reader.count_events(since_us=since, until_us=until, topic=topic)
        with progress("exporting", total) as update:
            written = await export_events(
                reader, out, since_us=since, until_us=until, topic=topic, progress=update, unreadable=unreadable
            )
    return written, left_out


def _left_out(left_out: int, written: int, where: str = "") -> None:
    if left_out:
        raise OutboxTextError(
            f"{counted(left_out, 'event')} left out{where}: {'its' if left_out == 1 else 'their'} text is not"
            f" valid UTF-8 ({written:,} exported)"
        )


@outbox.command(epilog=EXIT_CODES_HELP)
@path_argument
@range_options
@click.option(
    "-o",
    "--output",
    type=FilePath(allow_dash=True),
    default="-",
    show_default=True,
    help="Write to this file instead of stdout (created with mode 0600, like the outbox).",
)
def export(path: Path, since: int | None, until: int | None, topic: str | None, output: Path) -> None:
    """Write events as JSON lines (one event per line).

    Events come in the order they were appended. Each line holds id, topic, payload,
    created_at (ISO 8601, UTC), seq and status (pending, shipped or dead). `outbox import`
    reads the same shape back, keeping the ids. An event whose text is not valid UTF-8 (a
    damaged file) cannot be written as JSON: each is named on stderr, the rest are exported,
    and the exit code is 3.

    \b
    Examples:
      outbox export events.db > all.jsonl
      outbox export events.db --since 2024-05-01 --until 2024-05-02 --topic command_calls -o may1.jsonl
      outbox export events.db --since 2h | gzip > last-two-hours.jsonl.gz
    """
    check_range(since, until)
    if str(output) == "-":
        written, left_out = run(_export(path, sys.stdout.buffer, since, until, topic))
        _left_out(left_out, written)
        return
    target = Path(output)
    # Written under a temporary name and renamed once complete: an interrupted or failed export
    # never leaves a partial file, nor truncates the previous one. The events are as private as
    # the outbox (0600), so the new file gets that mode.
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with open(fd, "wb") as out:
            count, left_out = run(_export(path, out, since, until, topic))
        os.replace(partial, target)  # with events left out too: they are named, the rest kept
    finally:
        partial.unlink(missing_ok=True)
    _left_out(left_out, count, f" of {target}")
    click.echo(f"exported {counted(count, 'event')} to {target}", err=True)


async def _import(path: Path, source: Any, name: str, skip_bad: bool, max_payload_bytes: int) -> ImportSummary:
    async with OutboxReader(path, create=True) as reader:
        size = _size_of(source)
        with progress("reading", size, sizes=True) as read_bar:

            def report(phase: str, n: int) -> None:
                if phase == "read":
                    read_bar(n)

            summary = await import_events(
                reader, source, name=name, skip_bad=skip_bad, max_payload_bytes=max_payload_bytes, progress=report
            )
        return summary


def _size_of(source: Any) -> int | None:
    try:
        info = os.fstat(source.fileno())
    except (OSError, AttributeError, ValueError):
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None


@outbox.command("import", epilog=EXIT_CODES_HELP)
@path_argument
@click.argument("file", type=FilePath(allow_dash=True), metavar="FILE")
@click.option("--skip-bad", is_flag=True, help="Import the valid lines and list the bad ones, instead of importing nothing.")
@click.option(
    "--max-payload-bytes",
    type=click.IntRange(min=1),
    default=65536,
    show_default=True,
    metavar="BYTES",
    help="The largest payload accepted, as for Outbox(max_payload_bytes=...).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def import_(path: Path, file: Path, skip_bad: bool, max_payload_bytes: int, as_json: bool) -> None:
    """Add events from a JSON-lines FILE, keeping their ids.

    FILE holds lines as `outbox export` writes them (- for stdin); they are added as pending
    events, which the shipper then ships. An id already in the outbox is not added again:
    importing the same file twice adds nothing the second time, and an interrupted import is
    finished by running it again. Every line is checked as `append` checks an event; a bad line
    is reported with its number and nothing is imported, unless --skip-bad. The outbox is
    created if it does not exist.

    \b
    Examples:
      outbox import events.db backup.jsonl
      zcat old.jsonl.gz | outbox import events.db - --skip-bad
    """
    created = not path.exists()
    try:
        if str(file) == "-":
            summary = run(_import(path, sys.stdin.buffer, "stdin", skip_bad, max_payload_bytes))
            name = "stdin"
        else:
            with open(file, "rb") as source:
                summary = run(_import(path, source, str(file), skip_bad, max_payload_bytes))
            name = str(file)
    except BaseException:
        if created:
            _remove_empty_outbox(path)  # a failed import leaves no outbox behind it made itself
        raise
    if as_json:
        echo_json(
            {
                "added": summary.added,
                "already_present": summary.already_present,
                "skipped": [{"line": n, "error": why} for n, why in summary.skipped],
            }
        )
        return
    for number, why in summary.skipped[:20]:
        click.echo(f"skipped {name} line {number}: {why}", err=True)
    if len(summary.skipped) > 20:
        click.echo(f"... and {counted(len(summary.skipped) - 20, 'more bad line')} (--json lists them all)", err=True)
    click.echo(
        f"imported {counted(summary.added, 'event')} into {path} ({summary.already_present:,} already present,"
        f" {counted(len(summary.skipped), 'bad line')} skipped)"
    )


def _remove_empty_outbox(path: Path) -> None:
    """Delete the files an outbox at ``path`` is made of, if it holds no event."""
    try:
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
            if db.execute("SELECT count(*) FROM events").fetchone()[0]:
                return
    except sqlite3.Error:
        pass  # not even an outbox yet
    for base in (path, ship_path(path)):
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{base}{suffix}").unlink(missing_ok=True)


# -- dead letters --------------------------------------------------------------------------------


@outbox.group(epilog=EXIT_CODES_HELP)
def dead() -> None:
    """List, retry or drop events Postgres refused (dead letters).

    \b
    Examples:
      outbox dead list events.db
      outbox dead retry events.db 0190a1c2-...   # after fixing the table or the payload's consumer
      outbox dead drop events.db --topic junk
    """


def _split_ids(path: Path, ids: Sequence[str]) -> tuple[Path, list[str]]:
    """With OUTBOX_PATH set, ``outbox dead retry ID`` puts ID where PATH goes: take it back."""
    env_path = os.environ.get("OUTBOX_PATH")
    if env_path and not path.exists() and _is_uuid(str(path)):
        return Path(env_path), [str(path), *ids]
    return path, list(ids)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


_ids_argument = click.argument("ids", nargs=-1, metavar="[ID]...")
_topic_option = click.option("--topic", metavar="TOPIC", help="Only dead letters of this topic.")


def _check_uuids(ids: Sequence[str]) -> None:
    bad = [i for i in ids if not _is_uuid(i)]
    if bad:
        raise click.UsageError(f"not an event id (a UUID): {', '.join(bad)}")


async def _check_dead(reader: OutboxReader, ids: Sequence[str]) -> None:
    """Refuse, before changing anything, ids that name no dead letter: a typo must not pass as done."""
    found = {letter.id for letter in await reader.dead_letters(ids=ids)}
    unknown = [i for i in dict.fromkeys(ids) if i not in found]
    if unknown:
        noun = "not a dead letter" if len(unknown) == 1 else "not dead letters"
        raise click.UsageError(f"{noun}: {', '.join(unknown)}; nothing was changed")


async def _dead(path: Path, action: str, topic: str | None, ids: Sequence[str]) -> tuple[int, list[DeadLetter]]:
    _check_uuids(ids)
    async with OutboxReader(path) as reader:
        if ids and action != "list":
            await _check_dead(reader, ids)
        if action == "retry":
            return await reader.retry_dead(topic=topic, ids=ids), []
        if action == "drop":
            return await reader.drop_dead(topic=topic, ids=ids), []
        letters = await reader.dead_letters(topic=topic, ids=ids)
        return len(letters), letters


@dead.command("list", epilog=EXIT_CODES_HELP)
@path_argument
@_ids_argument
@_topic_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array for scripts.")
def dead_list(path: Path, ids: tuple[str, ...], topic: str | None, as_json: bool) -> None:
    """List dead letters (all, or those of TOPIC, or the given ids) with the error that refused them.

    \b
    Examples:
      outbox dead list events.db
      outbox dead list events.db --topic command_calls --json
    """
    path, wanted = _split_ids(path, ids)
    _, letters = run(_dead(path, "list", topic, wanted))
    if as_json:
        echo_json([dead_letter_json(letter) for letter in letters])
    else:
        click.echo(render_dead_letters(letters))


@dead.command("retry", epilog=EXIT_CODES_HELP)
@path_argument
@_ids_argument
@_topic_option
def dead_retry(path: Path, ids: tuple[str, ...], topic: str | None) -> None:
    """Mark dead letters for another attempt; a running shipper (or `shipper drain`) sends them.

    With no ids and no --topic, every dead letter is retried.

    \b
    Examples:
      outbox dead retry events.db
      outbox dead retry events.db 0190a1c2-7b3e-7c41-9d2a-0b1c2d3e4f50
    """
    path, wanted = _split_ids(path, ids)
    count, _ = run(_dead(path, "retry", topic, wanted))
    click.echo(f"marked {counted(count, 'dead letter')} for retry" + _already(count, wanted))


@dead.command("drop", epilog=EXIT_CODES_HELP)
@path_argument
@_ids_argument
@_topic_option
@click.option("--all", "drop_all", is_flag=True, help="Drop every dead letter (needed when no ids or --topic).")
def dead_drop(path: Path, ids: tuple[str, ...], topic: str | None, drop_all: bool) -> None:
    """Delete dead letters and their events for good.

    Name what to drop: ids, --topic, or --all.

    \b
    Examples:
      outbox dead drop events.db 0190a1c2-7b3e-7c41-9d2a-0b1c2d3e4f50
      outbox dead drop events.db --topic junk
    """
    path, wanted = _split_ids(path, ids)
    if not wanted and topic is None and not drop_all:
        raise click.UsageError("name the dead letters to drop: ids, --topic TOPIC, or --all")
    count, _ = run(_dead(path, "drop", topic, wanted))
    events = "its event" if count == 1 else "their events"
    click.echo(f"dropped {counted(count, 'dead letter')} and {events}")


def _already(count: int, ids: Sequence[str]) -> str:
    again = len(set(ids)) - count if ids else 0
    return f" ({again} of the ids given were already marked for retry)" if again > 0 else ""


# -- prune ---------------------------------------------------------------------------------------


async def _prune(path: Path, older_than: int) -> int:
    async with OutboxReader(path) as reader:
        deleted = await maintenance.prune(reader, older_than_us=older_than)
        await maintenance.checkpoint(reader)
        return deleted


@outbox.command(epilog=EXIT_CODES_HELP)
@path_argument
@click.option(
    "--older-than",
    type=TimeType(),
    required=True,
    metavar="AGE|TIME",
    help="Delete events shipped before this: an age (7d, 12h) or an ISO 8601 time.",
)
def prune(path: Path, older_than: int) -> None:
    """Delete old shipped events, to keep the file small.

    Only events already in Postgres are deleted: never a pending event and never a dead
    letter. Pruned events can no longer be exported, replayed or verified.

    \b
    Examples:
      outbox prune events.db --older-than 7d
      outbox prune events.db --older-than 2024-05-01T00:00:00Z
    """
    deleted = run(_prune(path, older_than))
    click.echo(f"pruned {counted(deleted, 'event')} shipped before {maintenance.format_time(older_than)}")


def main() -> None:
    """Run the local-only ``outbox`` command line (the console script adds replay and verify)."""
    with log_to_stderr("warning"):
        outbox.main()
