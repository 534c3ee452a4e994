"""The shipper's counters: what ``Shipper.stats`` holds and ``shipper drain`` reports.

Plain counts since the shipper started, updated by the loop after each batch and each failure;
the Prometheus metrics (:mod:`shipper.metrics`) are the same counts for a scraper.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ShipperStats"]


@dataclass
class ShipperStats:
    """Counters since the shipper started."""

    shipped: int = 0
    dead: int = 0
    retries: int = 0
    batches: int = 0
    last_error: str | None = None
