"""A process that only ships collects young objects less often (shipper.collector)."""

from __future__ import annotations

import gc

from shipper.collector import THRESHOLD, for_shipping


def test_a_shipping_process_collects_young_objects_less_often() -> None:
    saved = gc.get_threshold()
    try:
        gc.set_threshold(700, 10, 10)
        for_shipping()
        assert gc.get_threshold() == (THRESHOLD, 10, 10)
        gc.set_threshold(THRESHOLD * 2, 5, 5)
        for_shipping()  # never lowers a threshold set higher
        assert gc.get_threshold() == (THRESHOLD * 2, 5, 5)
        gc.set_threshold(0)  # the collector off stays off
        for_shipping()
        assert gc.get_threshold()[0] == 0
    finally:
        gc.set_threshold(*saved)
