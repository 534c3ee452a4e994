"""The sidecar's gauges are scraped from another thread: a scrape must never see half an update."""

from __future__ import annotations

import sys
import threading

from prometheus_client import generate_latest

from shipper.metrics import Metrics


def _values(text: bytes) -> dict[str, float]:
    out = {}
    for line in text.decode().splitlines():
        if line.startswith("outbox_pending ") or line.startswith("outbox_lag_seconds "):
            name, value = line.split()
            out[name] = float(value)
    return out


def test_a_scrape_sees_pending_and_lag_from_the_same_count() -> None:
    """CI once saw ``outbox_pending 0`` beside the lag of a backlog just shipped: the HTTP thread
    had read the gauges between the two ``set`` calls of one refresh."""
    metrics = Metrics(0)
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: every window shows up
    stop = threading.Event()

    def refresh() -> None:
        while not stop.is_set():
            metrics.gauges(5, 1.5)
            metrics.gauges(0, 0.0)

    worker = threading.Thread(target=refresh)
    worker.start()
    torn = []
    try:
        for _ in range(3000):
            v = _values(generate_latest(metrics.registry))
            if (v["outbox_pending"] == 0) != (v["outbox_lag_seconds"] == 0):
                torn.append(v)
    finally:
        stop.set()
        worker.join()
        sys.setswitchinterval(old)
    assert not torn, f"{len(torn)} of 3000 scrapes saw half an update, e.g. {torn[0]}"
