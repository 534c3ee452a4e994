"""When events shipped, by a clock a jump cannot fool: what retention counts from.

Retention used to count from an event's ``created_at``: events restored with ``outbox import``
(made 30 days ago) were pruned by the first drain, and a wall clock that jumped (a sidecar 8
days ahead, ``prune --older-than 30m`` after a jump) pruned events appended a moment before.
So the side file keeps *marks*: ``(cursor, wall time, boot id, time since boot)``, one a
minute at most while shipping goes on, each saying "every event up to ``cursor`` had shipped by
then". An age is measured on the boot clock (``CLOCK_BOOTTIME``: never set, never jumps) when
the mark was made in this boot, and on the wall clock only across a reboot.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

__all__ = ["DDL", "now", "ensure", "MARK_EVERY_US", "shipped_before_sql"]

MARK_EVERY_US = 60_000_000  # one mark a minute: a week of shipping is ~10,000 rows

DDL = """CREATE TABLE IF NOT EXISTS shipped_at (
    cursor INTEGER PRIMARY KEY,   -- every event with seq <= cursor had shipped by this mark
    wall_us INTEGER NOT NULL,     -- time.time() then, for marks made before a reboot
    boot TEXT NOT NULL,           -- the boot the boot clock below belongs to
    boot_us INTEGER NOT NULL      -- CLOCK_BOOTTIME then: never set, never jumps
)"""

_BOOTTIME = getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC)


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return ""  # no boot id: every mark counts by the wall clock


_BOOT = _boot_id()


def now() -> tuple[int, str, int]:
    """Return ``(wall_us, boot, boot_us)`` for a mark made now."""
    return time.time_ns() // 1000, _BOOT, time.clock_gettime_ns(_BOOTTIME) // 1000


def shipped_before_sql(age_us: int, schema: str = "ship") -> tuple[str, list[Any]]:
    """SQL for the highest cursor whose mark is at least ``age_us`` old, and its parameters."""
    wall, boot, boot_us = now()
    sql = (
        f"SELECT coalesce(max(cursor), 0) FROM {schema}.shipped_at"
        " WHERE (boot = ? AND boot != '' AND boot_us <= ?) OR ((boot != ? OR boot = '') AND wall_us <= ?)"
    )
    return sql, [boot, boot_us - age_us, boot, wall - age_us]


def ensure(conn: sqlite3.Connection) -> None:
    """Create the marks table in a side file (an older one too), with a first mark at its cursor.

    A side file from before marks existed gets one now: its shipped events count as shipped
    now, so none is pruned sooner than before.
    """
    conn.execute(DDL)
    if conn.execute("SELECT 1 FROM shipped_at LIMIT 1").fetchone() is None:
        cursor = conn.execute("SELECT cursor FROM progress WHERE one = 1").fetchone()
        conn.execute("INSERT OR IGNORE INTO shipped_at VALUES (?, ?, ?, ?)", (cursor[0] if cursor else 0, *now()))
