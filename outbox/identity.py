"""Which file an outbox is: noticing a copy, and giving it an identity of its own.

An outbox is known to Postgres by ``meta.outbox_id``: the lease and the ledger of shipped
ranges are keyed by it. A copy of the files (a backup restored beside the original, a VM
clone, ``cp``) carries the same id, so the two would share one ledger while their events past
the split differ: the second to ship a range would be told it was shipped already, and its own
events would be skipped. So every outbox also records *where it is*: the device and inode of
its events file and the machine's id. A writer that opens a file whose recorded place is not
its own takes a new ``outbox_id`` (a fork) and carries its progress and dead letters over; the
events both copies share are then shipped again under the new id and Postgres's ``ON CONFLICT
(id)`` leaves them as they are. A move within a filesystem keeps the inode, so it is no fork;
a move across filesystems is one, which costs a re-send of what is pending and nothing else.

A VM clone may keep device, inode and machine id alike: the shipper then notices from
Postgres instead (the ledger holds a range this file's events are not in) and forks through
:func:`fork` (see ``shipper.forks``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

__all__ = ["file_identity", "ensure_identity", "fork", "previous_ids", "had_side_file", "note_side_file"]

log = logging.getLogger(__name__)

_MACHINE_ID_FILES = ("/etc/machine-id", "/var/lib/dbus/machine-id")


def _machine_id() -> str:
    for name in _MACHINE_ID_FILES:
        try:
            with open(name, encoding="ascii", errors="replace") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text:
            return text
    return ""


def file_identity(path: str | os.PathLike[str]) -> str:
    """Return where the file at ``path`` is: ``device:inode:machine-id``."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{_machine_id()}"


def _meta(conn: sqlite3.Connection, *keys: str) -> dict[str, str]:
    marks = ", ".join("?" for _ in keys)
    rows = conn.execute(f"SELECT key, value FROM meta WHERE key IN ({marks})", keys).fetchall()
    return {str(k): str(v) for k, v in rows}


def previous_ids(conn: sqlite3.Connection) -> list[str]:
    """Return the ids this outbox had before its forks, oldest first."""
    return _meta(conn, "previous_ids").get("previous_ids", "").split()


def ensure_identity(conn: sqlite3.Connection, path: str | os.PathLike[str]) -> str:
    """Return the outbox's id, forking first if the file is a copy (see the module's docstring).

    ``conn`` is an autocommit connection to the events file. A file that cannot be written (a
    read-only opener) is left as it is: the next writer forks it.
    """
    here = file_identity(path)
    found = _meta(conn, "outbox_id", "file_identity")
    if found.get("file_identity") == here:
        return found["outbox_id"]
    try:
        conn.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if "readonly" in str(exc).replace(" ", "").lower() or "read-only" in str(exc):
            return found["outbox_id"]
        raise
    with _stamping(conn, here):
        found = _meta(conn, "outbox_id", "file_identity")  # again, under the lock: another may have forked
        if "file_identity" in found and found["file_identity"] != here:
            outbox_id = _fork(conn, path, f"its file moved or was copied (was {found['file_identity']}, now {here})")
        else:
            outbox_id = found["outbox_id"]
    return outbox_id


def fork(conn: sqlite3.Connection, path: str | os.PathLike[str], why: str) -> str:
    """Give the outbox a new id now (the shipper found it is a copy); return the new id."""
    conn.execute("BEGIN IMMEDIATE")
    with _stamping(conn, file_identity(path)):
        outbox_id = _fork(conn, path, why)
    return outbox_id


@contextlib.contextmanager
def _stamping(conn: sqlite3.Connection, identity: str) -> Iterator[None]:
    """Inside a transaction already begun: once the block has run, record the file identity it
    was done for and commit; on any error roll back, so an identity is never stamped half-done."""
    try:
        yield
        conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('file_identity', ?)", (identity,))
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _fork(conn: sqlite3.Connection, path: str | os.PathLike[str], why: str) -> str:
    old = _meta(conn, "outbox_id")["outbox_id"]
    new = str(uuid.uuid4())
    lineage = " ".join([*previous_ids(conn), old][-50:])
    conn.executemany(
        "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
        [("outbox_id", new), ("previous_ids", lineage)],
    )
    log.warning(
        "outbox %s is a copy of another (%s): it takes the new identity %s (was %s), so both copies"
        " ship every event of their own; events they share land once, by id",
        Path(path),
        why,
        new,
        old,
    )
    return new


def had_side_file(conn: sqlite3.Connection) -> bool:
    """True if a shipper has made this outbox's side file before (so a missing one was lost)."""
    return "side_file" in _meta(conn, "side_file")


def note_side_file(conn: sqlite3.Connection) -> None:
    """Record that the side file exists (once: later calls write nothing)."""
    if not had_side_file(conn):
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('side_file', '1')")
