"""The shipper's error tree, and the one place Postgres errors are sorted.

Three kinds of failure need three different answers:

* **transient** -- Postgres unreachable, restarting, out of connections, a cancelled statement:
  keep the events, back off, try again;
* **schema** -- a table missing or altered: every row would fail the same way, so keep the events,
  say clearly what to run (``shipper migrate``), and keep retrying slowly;
* **row** -- Postgres refused particular rows (a bad value, a constraint): find those rows, set
  them aside as dead letters with the error, ship the rest.
"""

from __future__ import annotations

from typing import Literal

import asyncpg

__all__ = ["ShipperError", "ConnectError", "SchemaError", "classify", "Kind"]


class ShipperError(Exception):
    """Shipping to Postgres failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (type(self).__doc__ or "").strip())


class ConnectError(ShipperError):
    """Postgres could not be reached, or refused the connection."""


class SchemaError(ShipperError):
    """Postgres's tables are missing or not of the shape the shipper writes (run `shipper migrate`)."""


Kind = Literal["transient", "schema", "row", "conflict"]

_TRANSIENT_CLASSES = ("08", "53", "57", "40", "55", "58", "XX")  # connection, resources, operator, rollback, lock, system
_SCHEMA_STATES = {
    "42P01",  # undefined_table
    "42703",  # undefined_column
    "42804",  # datatype_mismatch
    "42501",  # insufficient_privilege
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


def classify(exc: BaseException) -> Kind:
    """Sort an error from asyncpg (or the socket under it) into what to do about it."""
    if isinstance(exc, asyncpg.UniqueViolationError):
        return "conflict"
    if isinstance(exc, asyncpg.exceptions._base.DataError):  # a value asyncpg could not encode: that row's fault
        return "row"
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str):
        if state in _SCHEMA_STATES:
            return "schema"
        if state.startswith(_ROW_CLASSES):
            return "row"
        if state.startswith(_TRANSIENT_CLASSES):
            return "transient"
        return "schema"  # an unexpected server error: keep the events and retry slowly
    return "transient"  # OSError, timeouts, connection closed under us, interface errors
