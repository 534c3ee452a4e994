"""Show a DSN without its password, and open connections with errors that never leak one."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg

from outbox.secrets import scrub_secrets, secrets_in

from .errors import ConnectError

__all__ = ["redact_dsn", "scrub", "connect"]


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` with any password replaced by ``***``, whatever its shape (see outbox.secrets)."""
    return scrub_secrets(dsn)


def scrub(text: str, dsn: str) -> str:
    """Remove the DSN's password from an error message that might quote it, alone or in the DSN."""
    for secret in secrets_in(dsn):
        text = text.replace(secret, "***")
    return scrub_secrets(text)


async def connect(dsn: str, *, timeout: float = 10.0, **kwargs: Any) -> asyncpg.Connection:
    """Connect to Postgres, raising :class:`ConnectError` with a redacted, one-line message."""
    where = redact_dsn(dsn)
    try:
        return await asyncpg.connect(dsn, timeout=timeout, **kwargs)
    except (asyncio.TimeoutError, TimeoutError):
        raise ConnectError(f"Postgres at {where} did not answer within {timeout:g} s") from None
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise ConnectError(f"cannot reach Postgres at {where}: {scrub(reason, dsn)}") from None
    except asyncpg.InvalidAuthorizationSpecificationError as exc:
        raise ConnectError(f"Postgres at {where} refused the login: {scrub(str(exc), dsn)}") from None
    except asyncpg.InvalidPasswordError:
        raise ConnectError(f"Postgres at {where} refused the password") from None
    except asyncpg.PostgresError as exc:
        raise ConnectError(f"Postgres at {where} refused the connection: {scrub(str(exc), dsn)}") from None
    except (ValueError, TypeError, OverflowError, asyncpg.InterfaceError) as exc:  # OverflowError: a port past 65535
        raise ConnectError(f"malformed DSN {where}: {scrub(str(exc), dsn)}") from None
