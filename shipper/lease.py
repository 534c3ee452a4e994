"""The lease: which shipper may ship an outbox, as a Postgres row that expires and fences.

A session advisory lock does not survive a transaction pooler (the lock stays on a pooled server
connection that other clients then share) and never lapses while a frozen process keeps its TCP
connection. So the lease is a row of ``outbox_lease``: ``(outbox_id, holder, epoch, expires_at)``,
times from Postgres's clock only.

* **take**: one statement, granted when the row is absent or expired; each take has a new holder
  token, and the epoch counts the takeovers;
* **renew**: the leader pushes ``expires_at`` out every third of the TTL, only while the row still
  names its token;
* **fence**: each batch transaction calls ``outbox_fence(outbox_id, token)`` first (created by
  ``shipper migrate``), which locks the row ``FOR SHARE`` and fails the transaction with SQLSTATE
  ``OB001`` unless the token still holds an unexpired lease; so a batch from a shipper that lost
  the lease is refused together with its ledger row, and a takeover waits for a batch in flight;
* **release**: a clean stop expires the row at once.

Every statement here is a simple query with its values formatted in (each a UUID or a token
checked here, never outside text), bounded by ``lock_timeout``, and answered by its status line:
one round trip each, no prepared statement, nothing kept in the session.
"""

from __future__ import annotations

import collections
import logging
import os
import re
import socket
import time
import uuid
from typing import Protocol

from .connection import local_settings, qualified, quote_ident
from .migrate import FENCE_FUNCTION, LEASE_TABLE

__all__ = ["LeaseKeeper", "LeaseSink", "new_token", "take_sql", "renew_sql", "release_sql", "fence_sql"]

log = logging.getLogger(__name__)

_TOKEN = re.compile(r"[A-Za-z0-9_.:@-]{1,200}")


def new_token() -> str:
    """A holder token naming this process (shown in ``outbox_lease``) and unique to one take."""
    host = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname())[:60] or "host"
    return f"{host}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _values(outbox_id: str, token: str) -> tuple[str, str]:
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"bad lease token {token!r}")
    return f"'{uuid.UUID(outbox_id)}'", f"'{token}'"


def take_sql(schema: str, outbox_id: str, token: str, ttl: float, lock_timeout_s: float) -> str:
    """Take the lease if free or expired: status ``INSERT 0 1`` when granted."""
    oid, tok = _values(outbox_id, token)
    table = qualified(schema, LEASE_TABLE)
    return (
        f"{local_settings(lock_timeout_s=lock_timeout_s)}; "
        f"INSERT INTO {table} AS l (outbox_id, holder, expires_at)"
        f" VALUES ({oid}, {tok}, now() + make_interval(secs => {float(ttl)!r}))"
        " ON CONFLICT (outbox_id) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at,"
        " epoch = l.epoch + 1, taken_at = now()"
        " WHERE l.expires_at <= now()"
    )


def renew_sql(schema: str, outbox_id: str, token: str, ttl: float, lock_timeout_s: float) -> str:
    """Extend a lease still held by ``token``: status ``UPDATE 1`` when renewed."""
    oid, tok = _values(outbox_id, token)
    return (
        f"{local_settings(lock_timeout_s=lock_timeout_s)}; "
        f"UPDATE {qualified(schema, LEASE_TABLE)} SET expires_at = now() + make_interval(secs => {float(ttl)!r})"
        f" WHERE outbox_id = {oid} AND holder = {tok}"
    )


def release_sql(schema: str, outbox_id: str, token: str, lock_timeout_s: float) -> str:
    """Expire the lease now, if ``token`` still holds it."""
    oid, tok = _values(outbox_id, token)
    return (
        f"{local_settings(lock_timeout_s=lock_timeout_s)}; "
        f"UPDATE {qualified(schema, LEASE_TABLE)} SET expires_at = now() WHERE outbox_id = {oid} AND holder = {tok}"
    )


def fence_sql(schema: str, outbox_id: str, token: str) -> str:
    """The statement a batch transaction starts with: fails with SQLSTATE OB001 if the lease is lost."""
    oid, tok = _values(outbox_id, token)
    return f"SELECT {quote_ident(schema)}.{FENCE_FUNCTION}({oid}, {tok})"


class LeaseSink(Protocol):
    """The part of a sink the lease needs (see :class:`shipper.sink.Sink`)."""

    async def try_lease(self, outbox_id: str, holder: str, ttl: float, *, renew: bool = False) -> bool: ...

    async def release_lease(self, outbox_id: str, holder: str) -> None: ...


class LeaseKeeper:
    """The shipping loop's side of the lease: take it, renew it in time, notice losing it, release it.

    Parameters
    ----------
    sink:
        Where the lease row lives.
    ttl:
        Seconds a lease lasts unrenewed: a standby takes over about this long after the leader
        dies or freezes.
    """

    def __init__(self, sink: LeaseSink, ttl: float) -> None:
        if ttl <= 0:
            raise ValueError("lease_ttl must be positive")
        self.sink = sink
        self.ttl = ttl
        self.token: str | None = None
        self._renew_at = 0.0
        self._expires = 0.0  # local monotonic estimate, for logs only: Postgres's clock decides
        self._trips: collections.deque[float] = collections.deque(maxlen=8)

    @property
    def held(self) -> bool:
        """True while this shipper believes it holds the lease (each batch's fence checks it)."""
        return self.token is not None

    @property
    def trip_s(self) -> float | None:
        """Seconds one transaction costs with next to no work in it (None: none timed yet).

        The least of the last few takes and renewals, each one statement and a commit: the fixed
        cost a batch pays on top of its rows, which sizes batches (:mod:`shipper.batching`).
        """
        return min(self._trips) if self._trips else None

    async def _try(self, outbox_id: str, token: str, *, renew: bool = False) -> bool:
        started = time.monotonic()
        granted = await self.sink.try_lease(outbox_id, token, self.ttl, renew=renew)
        self._trips.append(time.monotonic() - started)
        return granted

    @property
    def poll_interval(self) -> float:
        """How often a standby looks whether the lease has become free."""
        return min(1.0, self.ttl / 4)

    async def claim(self, outbox_id: str) -> bool:
        """Take the lease (keeping it if this keeper's token still holds it, as after a reconnect);
        False while another shipper holds it."""
        if self.token is not None:
            if await self._try(outbox_id, self.token, renew=True):
                self._schedule()
                return True
            self.lost(outbox_id)
        token = new_token()
        if not await self._try(outbox_id, token):
            return False
        self.token = token
        self._schedule()
        return True

    async def keep(self, outbox_id: str) -> bool:
        """Renew the lease if a third of the TTL has passed; False (and one log line) if it was lost."""
        if self.token is None:
            return False
        if time.monotonic() < self._renew_at:
            return True
        if await self._try(outbox_id, self.token, renew=True):
            self._schedule()
            return True
        self.lost(outbox_id)
        return False

    def lost(self, outbox_id: str) -> None:
        """Forget the lease after finding it taken over, saying so once."""
        if self.token is None:
            return
        late = time.monotonic() - self._expires
        log.warning(
            "lost the lease on outbox %s (not renewed in time%s; another shipper may hold it now):"
            " standing by, nothing is shipped twice",
            outbox_id,
            f", {late:.1f} s past its expiry" if late > 0 else "",
        )
        self.token = None

    async def release(self, outbox_id: str) -> None:
        """Give the lease up at once (a clean stop), so a standby need not wait for it to expire."""
        token, self.token = self.token, None
        if token is not None:
            try:
                await self.sink.release_lease(outbox_id, token)
            except Exception as exc:  # it expires by itself; stopping must still succeed
                log.info("could not release the lease on outbox %s (it expires in %g s): %s", outbox_id, self.ttl, exc)

    def _schedule(self) -> None:
        now = time.monotonic()
        self._renew_at = now + self.ttl / 3
        self._expires = now + self.ttl
