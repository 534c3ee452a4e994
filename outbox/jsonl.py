"""Events in and out as JSON lines: the export writer and the import line reader.

Both stream: the export walks the outbox in keyset chunks, the import reads one bounded line at
a time and hands it to :func:`outbox.maintenance.import_records`, which stages on disk. Memory
therefore stays flat on files of millions of lines. The import reads bytes, not text, so that a
line of invalid UTF-8, a line too long to be an event, or a last line cut short by a killed
export each get their own message naming the line.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from .errors import PayloadError
from .maintenance import event_record, import_records, parse_record
from .reader import OutboxReader
from .records import Event

__all__ = ["export_events", "ImportSummary", "import_events", "max_line_bytes"]

_EXPORT_CHUNK = 1000


def max_line_bytes(max_payload_bytes: int) -> int:
    """Return the longest line an import accepts for a payload limit.

    An exporter escaping everything (``\\u0001`` is six bytes for one) can make a line about six
    times its payload; past eight times plus room for the other fields it cannot be a valid event.
    """
    return 8 * max_payload_bytes + 65536


async def export_events(
    reader: OutboxReader,
    out: BinaryIO,
    *,
    since_us: int | None = None,
    until_us: int | None = None,
    topic: str | None = None,
    progress: Callable[[int], None] | None = None,
    unreadable: Callable[[Event, str], object] | None = None,
) -> int:
    """Write the selected events to ``out`` as JSON lines, in seq order; return how many.

    Each record is :func:`outbox.maintenance.event_record` plus ``status`` (``pending``,
    ``shipped`` or ``dead``; a dead letter sent for retry is ``pending``). Events an operator
    dropped are left out. So is an event whose text is not valid UTF-8 (JSON text cannot hold
    it): it goes to ``unreadable`` with why, and the export goes on (without it,
    :class:`~outbox.OutboxTextError` stops it there).
    """
    cursor = await reader.cursor()
    aside = {int(seq): str(status) for seq, status in await reader.db.execute_fetchall("SELECT seq, status FROM ship.dead")}
    written = 0
    async for chunk in reader.iter_events(
        since_us=since_us, until_us=until_us, topic=topic, chunk=_EXPORT_CHUNK, unreadable=unreadable
    ):
        lines = []
        for event in chunk:
            state = aside.get(event.seq)
            if state == "dropped":
                continue
            if state == "dead":
                status = "dead"
            elif state == "retry":  # sent for another attempt: pending again, as `outbox status` counts it
                status = "pending"
            else:
                status = "shipped" if event.seq <= cursor else "pending"
            lines.append(json.dumps(event_record(event, status), ensure_ascii=False, separators=(",", ":")))
        if lines:
            out.write(("\n".join(lines) + "\n").encode("utf-8"))
        written += len(lines)
        if progress is not None:
            progress(written)
    out.flush()
    return written


@dataclass
class ImportSummary:
    """What an import did: events added, ids already present, and lines skipped (with why)."""

    added: int = 0
    already_present: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)


async def import_events(
    reader: OutboxReader,
    source: BinaryIO,
    *,
    name: str = "input",
    skip_bad: bool = False,
    max_payload_bytes: int = 65536,
    progress: Callable[[str, int], None] | None = None,
) -> ImportSummary:
    """Import JSON lines from ``source`` as pending events, keeping their ids.

    Every line is checked as ``append`` would check it. Without ``skip_bad`` the first bad line
    raises :class:`PayloadError` naming ``name``, the line and why, and nothing is imported;
    with it, bad lines are listed in the summary and the rest imported. Ids already in the
    outbox are left out, so importing a file twice adds nothing the second time.
    ``progress("read", bytes_read)`` and ``progress("move", rows_moved)`` report the two passes.
    """
    skipped: list[tuple[int, str]] = []
    limit = max_line_bytes(max_payload_bytes)

    def bad(number: int, why: str) -> None:
        if not skip_bad:
            raise PayloadError(f"{name} line {number}: {why}; nothing was imported (--skip-bad imports the other lines)")
        skipped.append((number, why))

    async def lines() -> AsyncIterator[tuple[int, str]]:
        number = 0
        consumed = 0
        while raw := source.readline(limit + 1):
            number += 1
            consumed += len(raw)
            complete = raw.endswith(b"\n")
            if not complete and len(raw) > limit:
                consumed += _skip_rest_of_line(source)
                bad(number, f"longer than {limit} bytes, too long to be an event of at most {max_payload_bytes} bytes")
                continue
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]  # a byte-order mark some editors write
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                bad(number, f"not valid UTF-8 (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line)")
                continue
            if not complete and text.strip():
                try:  # the last line, with no newline: say so if it is also broken
                    parse_record(text, max_payload_bytes)
                except PayloadError as exc:
                    bad(number, f"{exc} (the last line has no newline: was the file cut short?)")
                    continue
            if progress is not None and number % 1000 == 0:
                progress("read", consumed)
            yield number, text
        if progress is not None:
            progress("read", consumed)

    try:
        result = await import_records(
            reader, lines(), skip_bad=skip_bad, max_payload_bytes=max_payload_bytes, progress=_moves_only(progress)
        )
    except PayloadError as exc:
        message = str(exc)
        if message.startswith("line "):  # from import_records: name the file and say nothing was done
            message = f"{name} {message}; nothing was imported (--skip-bad imports the other lines)"
        raise PayloadError(message) from None
    skipped.extend(result.skipped or [])
    skipped.sort()
    return ImportSummary(added=result.added, already_present=result.already_present, skipped=skipped)


def _moves_only(progress: Callable[[str, int], None] | None) -> Callable[[str, int], None] | None:
    """Pass on ``move`` reports only: the line reader reports ``read`` progress in bytes itself."""
    if progress is None:
        return None
    report = progress

    def moves(phase: str, n: int) -> None:
        if phase == "move":
            report(phase, n)

    return moves


def _skip_rest_of_line(source: BinaryIO) -> int:
    skipped = 0
    while piece := source.readline(1 << 20):
        skipped += len(piece)
        if piece.endswith(b"\n"):
            break
    return skipped
