"""Every Postgres connection the shipper opens, set up in one place so that poolers work.

Hosted Postgres is usually reached through a transaction pooler (PgBouncer, Supavisor: port 6543
on Supabase), which hands each *transaction* to whichever server connection is free. So nothing
here may lean on state that outlives a transaction:

* asyncpg's statement cache is off (``statement_cache_size=0``): a named prepared statement stays
  on the server connection after the client leaves, and the next client routed there gets
  ``prepared statement "__asyncpg_stmt_1__" already exists``. Unnamed statements are per message;
* no session ``SET``: settings a statement needs (``lock_timeout``, ``statement_timeout``) are
  ``SET LOCAL`` inside its own transaction (:func:`local_settings`);
* no session advisory lock, no temporary table: the lease is a row (:mod:`shipper.lease`), the
  careful path inserts from arrays (:mod:`shipper.pgsink`).

The ``timestamptz`` codec (Unix microseconds both ways) costs no round trip: asyncpg knows the
built-in types' oids without asking.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg

from .dsn import redact_dsn, scrub
from .errors import ConnectError, DsnError

__all__ = ["connect", "local_settings", "quote_ident", "qualified", "PG_EPOCH_US"]

PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in Unix microseconds: Postgres's own epoch


def quote_ident(name: str) -> str:
    """Quote an SQL identifier (any name is safe inside the double quotes)."""
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, table: str) -> str:
    """``"schema"."table"``: every statement names its tables fully, whatever the search_path."""
    return f"{quote_ident(schema)}.{quote_ident(table)}"


def local_settings(
    *,
    lock_timeout_s: float | None = None,
    statement_timeout_s: float | None = None,
    idle_timeout_s: float | None = None,
) -> str:
    """One statement bounding this transaction's waits (pooler-safe: ``set_config(.., true)`` is
    ``SET LOCAL``, it ends with the transaction). A stricter limit the database or role already
    sets is kept: these only tighten an unlimited or looser one."""
    parts = []
    for name, seconds in (
        ("lock_timeout", lock_timeout_s),
        ("statement_timeout", statement_timeout_s),
        ("idle_in_transaction_session_timeout", idle_timeout_s),
    ):
        if seconds is None:
            continue
        ms = max(1, int(seconds * 1000))
        now = f"current_setting('{name}')"
        parts.append(
            f"set_config('{name}', CASE WHEN {now}::interval = interval '0' OR {now}::interval > interval '{ms} ms'"
            f" THEN '{ms}' ELSE {now} END, true)"
        )
    return "SELECT " + ", ".join(parts)


def _unreadable_tls_file(dsn: str) -> str | None:
    """The sslrootcert/sslcert/sslkey the DSN names that cannot be read, if any."""
    query = parse_qs(urlsplit(dsn).query) if "://" in dsn else {}
    for key in ("sslrootcert", "sslcert", "sslkey"):
        for path in query.get(key, []):
            if not os.access(path, os.R_OK):
                return f"{key}={path}"
    return None


async def connect(
    dsn: str, *, timeout: float = 10.0, command_timeout: float | None = None, **kwargs: Any
) -> asyncpg.Connection:
    """Connect to Postgres, pooler-safe, raising :class:`ConnectError` with a redacted, one-line message.

    A :class:`DsnError` (a ConnectError) means retrying cannot help: the DSN or its TLS settings
    are wrong.
    """
    where = redact_dsn(dsn)
    try:
        conn = await asyncpg.connect(
            dsn, timeout=timeout, command_timeout=command_timeout, statement_cache_size=0, **kwargs
        )
    except (asyncio.TimeoutError, TimeoutError):
        raise ConnectError(f"Postgres at {where} did not answer within {timeout:g} s") from None
    except OSError as exc:
        unreadable = _unreadable_tls_file(dsn) if isinstance(exc, (FileNotFoundError, PermissionError)) else None
        if unreadable is not None:  # not the server away (a gone socket looks alike): retrying cannot help
            raise DsnError(f"TLS set-up for {where} failed: cannot read {unreadable}: {exc.strerror}") from None
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConnectError(f"cannot reach Postgres at {where}: {scrub(reason, dsn)}") from None
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise ConnectError(f"Postgres at {where} refused the login: {scrub(str(exc), dsn)}") from None
    except asyncpg.InvalidPasswordError:
        raise ConnectError(f"Postgres at {where} refused the password") from None
    except asyncpg.PostgresError as exc:
        raise ConnectError(f"Postgres at {where} refused the connection: {scrub(str(exc), dsn)}") from None
    except asyncpg.ClientConfigurationError as exc:
        # sslmode=verify-full without a root certificate, a bad sslrootcert path, ...: the DSN parsed
        text = scrub(" ".join(str(exc).split("\n")[0].split()), dsn)
        raise DsnError(f"TLS set-up for {where} failed: {text}") from None
    except (ValueError, TypeError, OverflowError, asyncpg.InterfaceError) as exc:  # OverflowError: a port past 65535
        raise DsnError(f"malformed DSN {where}: {scrub(str(exc), dsn)}") from None
    try:
        await conn.set_type_codec(
            "timestamptz",
            schema="pg_catalog",
            encoder=lambda us: (us - PG_EPOCH_US,),
            decoder=lambda t: t[0] + PG_EPOCH_US,
            format="tuple",
        )
    except BaseException:
        conn.terminate()
        raise
    return conn
