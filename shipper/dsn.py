"""Show a DSN without its password, and scrub it from error messages (connections: :mod:`shipper.connection`)."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_dsn", "scrub"]

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
