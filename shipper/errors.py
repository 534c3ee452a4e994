"""The shipper's error tree, and the one place Postgres errors are sorted.

Each kind of failure needs its own answer:

* **transient** -- Postgres unreachable, restarting, out of connections, a cancelled statement,
  a lock not granted in time: keep the events, back off, try again;
* **schema** -- a table missing or altered: every row would fail the same way, so keep the events,
  say clearly what to run (``shipper migrate``), and keep retrying slowly;
* **permission** -- the role lacks a GRANT (SQLSTATE 42501): say which one, retry slowly (an
  owner may grant it) and show it in ``outbox status``; one-off commands exit;
* **pooler** -- a transaction pooler (PgBouncer, Supavisor) refused what the session did, e.g. a
  named prepared statement: a set-up problem, never one ``shipper migrate`` fixes;
* **lease** -- this shipper's lease ran out and another took it over: stand by, never retry the batch;
* **row** -- Postgres refused particular rows (a bad value, a constraint): find those rows, set
  them aside as dead letters with the error, ship the rest.
"""

from __future__ import annotations

import re
from typing import Literal

import asyncpg

__all__ = [
    "ShipperError",
    "ConnectError",
    "DsnError",
    "SchemaError",
    "GrantError",
    "LeaseLost",
    "LEASE_LOST_STATE",
    "classify",
    "hint",
    "Kind",
]

LEASE_LOST_STATE = "OB001"  # raised by the fence function that `shipper migrate` creates


class ShipperError(Exception):
    """Shipping to Postgres failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())


class ConnectError(ShipperError):
    """Postgres could not be reached, or refused the connection."""


class DsnError(ConnectError):
    """The DSN (or its TLS settings) cannot work as given: retrying will not help."""


class SchemaError(ShipperError):
    """Postgres's tables are missing or not of the shape the shipper writes (run `shipper migrate`)."""


class GrantError(SchemaError):
    """The database role lacks a privilege the shipper needs (see docs/MANAGED.md for the GRANTs)."""


class LeaseLost(ShipperError):
    """Another shipper holds this outbox's lease now: this one stands by."""


Kind = Literal["transient", "schema", "permission", "pooler", "lease", "row", "conflict"]

_TRANSIENT_CLASSES = ("08", "53", "57", "40", "55", "58", "XX")  # connection, resources, operator, rollback, lock, system
_POOLER_STATES = {
    "26000",  # invalid_sql_statement_name: prepared statement "__asyncpg_stmt_N__" does not exist
    "42P05",  # duplicate_prepared_statement: ... already exists (another client's, on a pooled connection)
    "0A000",  # feature_not_supported: what a pooler says of what it cannot route
}
_SCHEMA_STATES = {
    "42P01",  # undefined_table
    "42703",  # undefined_column
    "42804",  # datatype_mismatch
    "42883",  # undefined_function (the lease's fence: schema older than this release)
    "25006",  # read_only_sql_transaction
    "3F000",  # invalid_schema_name
    "42P10",  # invalid_column_reference (ON CONFLICT target gone)
    # not_null_violation: every NOT NULL column the shipper writes is checked before sending,
    # so this is a column added by hand that it does not know; every row would fail alike
    "23502",
}
# data exception, integrity constraint violation, program limit exceeded (a row too big, nested
# too deeply): each is one row's fault, found by bisecting and set aside, never retried forever
_ROW_CLASSES = ("22", "23", "54")
_POOLER_TEXT = re.compile(r"prepared statement|pgbouncer|supavisor|unsupported startup parameter", re.IGNORECASE)


def classify(exc: BaseException) -> Kind:
    """Sort an error from asyncpg (or the socket under it) into what to do about it."""
    if isinstance(exc, LeaseLost):
        return "lease"
    if isinstance(exc, GrantError):
        return "permission"
    if isinstance(exc, SchemaError):
        return "schema"
    if isinstance(exc, asyncpg.UniqueViolationError):
        return "conflict"
    if isinstance(exc, asyncpg.exceptions._base.DataError):  # a value asyncpg could not encode: that row's fault
        return "row"
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str):
        if state == LEASE_LOST_STATE:
            return "lease"
        if state == "42501":
            return "permission"
        if state in _POOLER_STATES or (state.startswith("08") and _POOLER_TEXT.search(str(exc))):
            return "pooler"
        if state in _SCHEMA_STATES:
            return "schema"
        if state.startswith(_ROW_CLASSES):
            return "row"
        if state.startswith(_TRANSIENT_CLASSES):
            return "transient"
        return "schema"  # an unexpected server error: keep the events and retry slowly
    if _POOLER_TEXT.search(str(exc)):
        return "pooler"
    return "transient"  # OSError, timeouts, connection closed under us, interface errors


_DENIED = re.compile(r"permission denied for (table|relation|schema|sequence|function) (\S+)", re.IGNORECASE)


def hint(exc: BaseException, kind: Kind | None = None) -> str:
    """What an operator should do about ``exc``, as a clause to append to its message ('' if nothing)."""
    kind = kind or classify(exc)
    if kind == "schema" and not isinstance(exc, SchemaError):
        return " -- run `shipper migrate` (as the owner of the tables)"
    if kind == "permission" and not isinstance(exc, GrantError):
        return f" -- {grant_for(str(exc))}"
    if kind == "pooler":
        return (
            " -- a connection pooler refused it: use a transaction-mode pooler port (6543) or a direct"
            " connection; this is not fixed by `shipper migrate`"
        )
    return ""


def grant_for(message: str) -> str:
    """The GRANT an owner should run for a 'permission denied for ...' message."""
    match = _DENIED.search(message)
    if match is None:
        return "the role lacks a privilege: grant what docs/MANAGED.md lists"
    what, name = match.group(1).lower(), match.group(2).strip('"')
    if what == "schema":
        return f"missing GRANT USAGE ON SCHEMA {name} TO <role> (see docs/MANAGED.md)"
    if what == "function":
        return f"missing GRANT EXECUTE ON FUNCTION {name} TO <role> (see docs/MANAGED.md)"
    return f"missing GRANT SELECT, INSERT, UPDATE, DELETE ON {name} TO <role> (see docs/MANAGED.md)"
