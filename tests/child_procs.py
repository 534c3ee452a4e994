"""Child processes the crash tests start, kill and count: each prints ``ready`` once it is set up.

One way to start them, so every test waits for the same signal and shows the child's own output
when it never comes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

__all__ = ["start_ready", "start_sidecar", "start_appender"]

PROCS = Path(__file__).parent / "procs"


def start_ready(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    """Run ``python ARGS`` and return once it has printed ``ready`` (its output, if it did not)."""
    proc = subprocess.Popen(
        [sys.executable, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line == "ready\n", (line, proc.communicate(timeout=10))
    return proc


def start_sidecar(
    path: Path, dsn: str, env: dict[str, str], batch_size: int = 200, ttl: float | None = None
) -> subprocess.Popen[str]:
    """A sidecar shipper (tests/procs/sidecar.py) on ``path``; ``ttl``: its lease's, else its default."""
    args = [str(PROCS / "sidecar.py"), str(path), dsn, str(batch_size)]
    return start_ready(args if ttl is None else [*args, str(ttl)], env)


def start_appender(path: Path, env: dict[str, str], topic: str = "t", durability: str = "process") -> subprocess.Popen[str]:
    """An appender (tests/procs/append_loop.py) that prints each acknowledged id."""
    return start_ready([str(PROCS / "append_loop.py"), str(path), topic, durability], env)
