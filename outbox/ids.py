"""Time-ordered event ids (UUID version 7, RFC 9562).

Ids sort by creation time, so Postgres's primary-key index stays append-mostly, and they are
unique by construction: the outbox needs no index of its own to refuse duplicates.
"""

from __future__ import annotations

import os
import threading
import time
import uuid

__all__ = ["uuid7", "uuid7_time_ms"]

_RAND_BITS = 74  # 12 bits of rand_a + 62 bits of rand_b
_RAND_MASK = (1 << _RAND_BITS) - 1
_LOW_BITS = 48  # the last 12 hex digits of the id
_LOW_MASK = (1 << _LOW_BITS) - 1
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0
# The first 24 characters of the id depend only on the millisecond and the random bits above
# the last 48; ids made in the same millisecond share them, so they are formatted once.
_prefix_ms = -1
_prefix_high = -1
_prefix = ""


def uuid7(now_ns: int | None = None) -> str:
    """Return a new UUIDv7 as a canonical string, monotonic within this process.

    Within one millisecond the 74 random bits are incremented rather than redrawn (RFC 9562,
    section 6.2, method 2), so ids from one process sort in the order they were made.
    ``now_ns`` is the current ``time.time_ns()`` when the caller has just read it.
    """
    global _last_ms, _last_rand, _prefix_ms, _prefix_high, _prefix
    ms = (time.time_ns() if now_ns is None else now_ns) // 1_000_000
    _lock.acquire()  # acquire/release around try/finally: half the cost of ``with _lock``
    try:
        if ms <= _last_ms:
            ms = _last_ms
            rand = (_last_rand + 1) & _RAND_MASK
            if rand == 0:  # 2**74 ids in one millisecond: borrow the next millisecond
                ms += 1
                rand = int.from_bytes(os.urandom(10), "big") & _RAND_MASK
        else:
            rand = int.from_bytes(os.urandom(10), "big") & _RAND_MASK
        _last_ms, _last_rand = ms, rand
        high = rand >> _LOW_BITS
        if ms != _prefix_ms or high != _prefix_high:
            h = f"{_layout(ms, rand):032x}"
            _prefix = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-"
            _prefix_ms, _prefix_high = ms, high
        prefix = _prefix
    finally:
        _lock.release()
    return prefix + "%012x" % (rand & _LOW_MASK)  # %-formatting: twice as fast as an f-string here


def _layout(ms: int, rand: int) -> int:
    """Return the 128-bit id: 48 bits of ms, version 7, rand_a, variant 0b10, rand_b."""
    return (
        (ms << 80)
        | (0x7 << 76)
        | ((rand >> 62) << 64)
        | (0b10 << 62)
        | (rand & ((1 << 62) - 1))
    )


def uuid7_time_ms(event_id: str) -> int:
    """Return the Unix time in milliseconds embedded in a UUIDv7 string."""
    return uuid.UUID(event_id).int >> 80
