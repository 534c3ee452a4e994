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
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def uuid7() -> str:
    """Return a new UUIDv7 as a canonical string, monotonic within this process.

    Within one millisecond the 74 random bits are incremented rather than redrawn (RFC 9562,
    section 6.2, method 2), so ids from one process sort in the order they were made.
    """
    global _last_ms, _last_rand
    ms = time.time_ns() // 1_000_000
    with _lock:
        if ms <= _last_ms:
            ms = _last_ms
            rand = (_last_rand + 1) & _RAND_MASK
            if rand == 0:  # 2**74 ids in one millisecond: borrow the next millisecond
                ms += 1
                rand = int.from_bytes(os.urandom(10), "big") & _RAND_MASK
        else:
            rand = int.from_bytes(os.urandom(10), "big") & _RAND_MASK
        _last_ms, _last_rand = ms, rand
    value = (
        (ms << 80)
        | (0x7 << 76)
        | ((rand >> 62) << 64)
        | (0b10 << 62)
        | (rand & ((1 << 62) - 1))
    )
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def uuid7_time_ms(event_id: str) -> int:
    """Return the Unix time in milliseconds embedded in a UUIDv7 string."""
    return uuid.UUID(event_id).int >> 80
