"""A deadline inside the event loop for every ``async def`` test, a little before pytest-timeout's.

pytest-timeout's default alarm raises in whatever Python code runs when it fires. In an async test
that is often a background task (a shipper retrying, a proxy pumping), which swallows the error
while the test itself stays stuck on its await. Cancelling the test's own task from inside the
loop ends the test where it waits, runs its ``finally`` blocks and fixtures' teardown, and the
session goes on; pytest-timeout stays the backstop for code that cannot be cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

__all__ = ["SHARE", "in_loop_deadline", "timeout_of"]

SHARE = 0.8
"""The part of pytest-timeout's budget the test body gets; the rest is for teardown."""


def timeout_of(item: pytest.Item) -> float:
    """Return pytest-timeout's limit for ``item`` in seconds (0: none)."""
    marker = item.get_closest_marker("timeout")
    if marker is not None:
        value = marker.args[0] if marker.args else marker.kwargs.get("timeout")
    else:
        value = item.config.getoption("timeout", None) or item.config.getini("timeout")
    return float(value or 0)


def _bounded(func: Callable[..., Coroutine[Any, Any, Any]], seconds: float) -> Callable[..., Coroutine[Any, Any, Any]]:
    @functools.wraps(func)
    async def run(*args: Any, **kwargs: Any) -> Any:
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                return await func(*args, **kwargs)
        except TimeoutError:
            if not deadline.expired():
                raise  # the test's own timeout, not ours
            pytest.fail(f"still running after {seconds:g} s ({SHARE:.0%} of the test's timeout): cancelled where it waited")

    return run


@contextlib.contextmanager
def in_loop_deadline(item: pytest.Item) -> Iterator[None]:
    """While ``item`` runs, give its coroutine function a deadline of its own, if it has one."""
    seconds = timeout_of(item) * SHARE
    func = getattr(item, "obj", None)
    if seconds <= 0 or not inspect.iscoroutinefunction(func):
        yield
        return
    item.obj = _bounded(func, seconds)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        item.obj = func  # type: ignore[attr-defined]
