"""Prometheus metrics for the sidecar, in a registry of its own (two shippers never collide)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics"]

log = logging.getLogger(__name__)


class _Registry(CollectorRegistry):  # type: ignore[misc]
    """A registry whose scrape waits for a refresh of the backlog gauges to finish, so that
    ``outbox_pending`` and ``outbox_lag_seconds`` always come from the same count."""

    def __init__(self) -> None:
        super().__init__()
        self.updating = threading.Lock()

    def collect(self) -> Iterator[Any]:
        with self.updating:
            metrics = list(super().collect())
        yield from metrics


class Metrics:
    """The shipper's counters, served over HTTP on 127.0.0.1 while the shipper runs."""

    def __init__(self, port: int, addr: str = "127.0.0.1") -> None:
        self.port = port
        self.addr = addr
        self.registry = _Registry()
        r = self.registry
        self.pending = Gauge("outbox_pending", "Events waiting to be shipped", registry=r)
        self.lag = Gauge("outbox_lag_seconds", "Age of the oldest pending event", registry=r)
        self.shipped = Counter("outbox_shipped_total", "Events delivered to Postgres", registry=r)
        self.dead = Counter("outbox_dead_total", "Events refused by Postgres and set aside", registry=r)
        self.retries = Counter("outbox_retries_total", "Failed shipping attempts, retried", registry=r)
        self.duration = Histogram(
            "outbox_batch_duration_seconds",
            "Time to ship one batch",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )
        self._server: Any = None

    def start(self) -> None:
        """Start serving ``/metrics``."""
        if self._server is None:
            self._server, _ = start_http_server(self.port, addr=self.addr, registry=self.registry)
            log.info("metrics on http://%s:%d/metrics", self.addr, self.port)

    def stop(self) -> None:
        """Stop serving."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()

    def batch(self, shipped: int, dead: int, seconds: float) -> None:
        """Record one shipped batch."""
        self.shipped.inc(shipped)
        if dead:
            self.dead.inc(dead)
        if seconds:
            self.duration.observe(seconds)

    def retry(self) -> None:
        """Record one failed attempt."""
        self.retries.inc()

    def gauges(self, pending: int, lag_s: float) -> None:
        """Set the backlog gauges, both or neither as a scrape sees them (it runs on the HTTP thread)."""
        with self.registry.updating:
            self.pending.set(pending)
            self.lag.set(lag_s)
