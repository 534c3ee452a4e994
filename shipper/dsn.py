"""Show a DSN without its password, and scrub it from error messages (connections: :mod:`shipper.connection`)."""

from __future__ import annotations

from outbox.secrets import scrub_secrets, secrets_in

__all__ = ["redact_dsn", "scrub"]

def redact_dsn(dsn: str) -> str:
    """Return ``dsn`` with any password replaced by ``***``, whatever its shape (see outbox.secrets)."""
    return scrub_secrets(dsn)


def scrub(text: str, dsn: str) -> str:
    """Remove the DSN's password from an error message that might quote it, alone or in the DSN."""
    for secret in secrets_in(dsn):
        text = text.replace(secret, "***")
    return scrub_secrets(text)
