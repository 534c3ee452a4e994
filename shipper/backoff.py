"""What the loop says and waits after a failure: one line naming it, and a jittered backoff.

Kept apart from the loop so the rule is one place: transient failures back off with full jitter
(``base`` doubling to ``cap``); failures an operator must mend (a missing GRANT, a schema to
migrate, a pooler setting) retry calmly, at least every 5 s, so a log is not flooded while
nobody has acted yet.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from outbox import OutboxError

from .errors import ShipperError, classify, hint

__all__ = ["Failure", "describe"]

_CALM = ("permission", "schema", "pooler")  # an operator must act
_CALM_S = 5.0


@dataclass(frozen=True)
class Failure:
    """One failure as the loop reports it."""

    kind: str  # "outbox", or shipper.errors.classify's kind
    text: str  # one line: the error, then the advice if any
    timed_out: bool  # Postgres's statement timeout: smaller batches may pass

    def delay(self, failures: int, base: float, cap: float) -> float:
        """Seconds to wait before attempt ``failures + 1``."""
        delay = random.uniform(0, min(cap, base * 2 ** min(failures, 30)))  # full jitter
        if self.kind in _CALM:
            delay = max(delay, min(cap, _CALM_S))
        return delay


def describe(exc: BaseException) -> Failure:
    """The kind of ``exc`` and one line saying it (never a traceback)."""
    if isinstance(exc, ShipperError):  # ConnectError included: already one clear line
        text = str(exc)
    else:
        text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    kind: str
    if isinstance(exc, OutboxError):
        kind, advice = "outbox", ""
    else:
        sort = classify(exc)
        kind, advice = sort, hint(exc, sort)
    return Failure(kind, f"{text}{advice}", getattr(exc, "sqlstate", None) == "57014")
