"""Show a DSN without its password, and open connections with errors that never leak one."""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from .errors import ConnectError

__all__ = ["redact_dsn", "connect"]

_KEYWORD_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` with any password replaced by ``***`` (URL or key=value form)."""
    if "://" not in dsn:
        return _KEYWORD_PASSWORD.sub(r"\1***", dsn)
    try:
        parts = urlsplit(dsn)
        netloc = parts.netloc
        if "@" in netloc:
            userinfo, _, hostinfo = netloc.rpartition("@")
            if ":" in userinfo:
                userinfo = userinfo.split(":", 1)[0] + ":***"
            netloc = f"{userinfo}@{hostinfo}"
        redacted = urlunsplit(parts._replace(netloc=netloc))
    except ValueError:
        head, _, tail = dsn.partition("://")
        redacted = f"{head}://***@{tail.rpartition('@')[2]}" if "@" in tail else dsn
    return _QUERY_PASSWORD.sub(r"\1***", redacted)


def scrub(text: str, dsn: str) -> str:
    """Remove the DSN's password from an error message that might quote it."""
    password = _password_of(dsn)
    text = text.replace(dsn, redact_dsn(dsn))
    return text.replace(password, "***") if password else text


def _password_of(dsn: str) -> str | None:
    try:
        return urlsplit(dsn).password if "://" in dsn else None
    except ValueError:
        return None


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
    except (ValueError, TypeError, asyncpg.InterfaceError) as exc:
        raise ConnectError(f"malformed DSN {where}: {scrub(str(exc), dsn)}") from None
