"""How the command line shows an outbox to people (tables) and to scripts (JSON shapes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .maintenance import format_time
from .reader import DeadLetter, Status

__all__ = ["counted", "human_bytes", "human_age", "render_status", "render_dead_letters", "dead_letter_json"]


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """Return ``1 event`` or ``3 events`` (``plural`` when adding an s will not do)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


def human_bytes(n: int) -> str:
    """Return a size such as ``512 B`` or ``3.4 MiB``."""
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{int(size)} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


def human_age(seconds: float) -> str:
    """Return an age such as ``4.2s``, ``3m 20s`` or ``2d 4h``."""
    s = int(seconds)
    for big, small, big_name, small_name in ((86400, 3600, "d", "h"), (3600, 60, "h", "m"), (60, 1, "m", "s")):
        if s >= big:
            return f"{s // big}{big_name} {(s % big) // small}{small_name}"
    return f"{seconds:.1f}s" if seconds < 10 else f"{s}s"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    lines = []
    for row in (header, *rows):
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells).rstrip())
    return lines


def render_status(status: Status, path: str) -> str:
    """Return the table ``outbox status`` prints for people."""
    oldest = "" if status.oldest_pending_age_s is None else f"  (oldest {human_age(status.oldest_pending_age_s)} ago)"
    lines = [
        f"outbox   {path}",
        f"on disk  {human_bytes(status.bytes)}",
        f"pending  {status.pending:,}{oldest}",
        f"shipped  {status.shipped:,}",
        f"dead     {status.dead:,}" + (f"  (see: outbox dead list {path})" if status.dead else ""),
    ]
    if status.last_error:
        when = f" at {format_time(status.last_error_at)}" if status.last_error_at else ""
        lines.append(f"last shipping error{when}: {status.last_error}")
    else:
        lines.append("last shipping error: none")
    if status.topics:
        lines.append("")
        rows = [(t.topic, f"{t.pending:,}", f"{t.shipped:,}", f"{t.dead:,}") for t in status.topics]
        lines.extend(_table(("TOPIC", "PENDING", "SHIPPED", "DEAD"), rows, {1, 2, 3}))
    return "\n".join(lines)


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    """Return the JSON shape of one dead letter in ``outbox dead list --json``."""
    return {
        "id": letter.id,
        "seq": letter.seq,
        "topic": letter.topic,
        "status": letter.status,
        "attempts": letter.attempts,
        "failed_at": format_time(letter.failed_at),
        "error": letter.error,
    }


def render_dead_letters(letters: Sequence[DeadLetter]) -> str:
    """Return the table ``outbox dead list`` prints for people."""
    if not letters:
        return "no dead letters"
    rows = [
        (d.id, d.topic, d.status, str(d.attempts), format_time(d.failed_at)[:19] + "Z", d.error.splitlines()[0][:100])
        for d in letters
    ]
    lines = _table(("ID", "TOPIC", "STATUS", "TRIES", "FAILED AT", "ERROR"), rows, {3})
    lines.append(counted(len(letters), "dead letter"))
    return "\n".join(lines)
