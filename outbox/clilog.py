"""Log lines for the command lines: one line per record, text or JSON, never a password.

A sidecar's stderr goes to a log collector; a traceback there is many lines and may quote a
DSN. Records are therefore flattened to one line, exceptions summarised as ``Type: message``,
and every line passed through :func:`outbox.clitools.scrub_secrets`.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from typing import Any

from .clitools import describe_error, one_line, scrub_secrets

__all__ = ["log_to_stderr"]

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


class _LineFormatter(logging.Formatter):
    """One line per record, JSON or text, passwords scrubbed, exceptions summarised (no traceback)."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            message = f"{message} ({type(exc).__name__}: {describe_error(exc)})"
        message = scrub_secrets(one_line(message))
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD_ATTRS and not k.startswith("_")}
        stamp = datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds")
        if self.kind == "json":
            line: dict[str, Any] = {"time": stamp, "level": record.levelname.lower(), "logger": record.name, "message": message}
            for key, value in extras.items():
                line.setdefault(key, value if isinstance(value, (int, float, bool, type(None))) else str(value))
            return scrub_secrets(json.dumps(line, ensure_ascii=False, default=str))
        fields = "".join(f" {key}={value}" for key, value in extras.items())
        return scrub_secrets(f"{stamp} {record.levelname:<7} {record.name}: {message}{fields}")


@contextmanager
def log_to_stderr(level: str = "warning", kind: str = "text") -> Iterator[None]:
    """Send log records at ``level`` and above to stderr, one line each, for the duration.

    ``kind`` is ``"text"`` or ``"json"``. The handler is removed afterwards, so a test runner's
    captured streams are not written to once closed.
    """
    root = logging.getLogger()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LineFormatter(kind))
    outer = [h for h in root.handlers if isinstance(h.formatter, _LineFormatter)]  # ours, from main()
    old_level = root.level
    for h in outer:
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper()))
    try:
        yield
    finally:
        root.removeHandler(handler)
        for h in outer:
            root.addHandler(h)
        root.setLevel(old_level)
