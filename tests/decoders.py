"""The ways a route can decode payloads, for tests that must hold under each.

``msgspec``: everything the ``fast`` extra installs (the test extra installs it too), the
whole-batch encoder reading payloads with msgspec; ``orjson``: without msgspec; ``json``:
neither, as a plain install runs. Each is a real install state, set by switching off the
optional modules the shipper looked up at import.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import shipper.columnar as columnar
import shipper.routes as routes

__all__ = ["DECODERS", "using"]

DECODERS = ("msgspec", "orjson", "json")


@contextlib.contextmanager
def using(name: str) -> Iterator[None]:
    """Route as an install with only ``name``'s decoders would (see the module docstring)."""
    import msgspec  # noqa: F401  (the test extra installs both: never a silent skip)
    import orjson  # noqa: F401

    assert name in DECODERS, name
    assert columnar._optional_msgspec() is not None and routes._fast_loads is not None and routes._fast_dumps is not None
    saved = columnar._msgspec, routes._fast_loads, routes._fast_dumps
    try:
        if name != "msgspec":
            columnar._msgspec = None
        if name == "json":
            routes._fast_loads, routes._fast_dumps = None, None
        yield
    finally:
        columnar._msgspec, routes._fast_loads, routes._fast_dumps = saved
