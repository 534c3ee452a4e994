"""Describe the machine a run was measured on: figures mean little without it."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil  # type: ignore[import-untyped]

__all__ = ["describe", "load_average"]


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(path: Path) -> str:
    """Return ``"ext4 on /dev/vda (virtual disk, not rotational)"`` for the mount holding ``path``."""
    path = path.resolve()
    best = None
    for part in psutil.disk_partitions(all=True):
        if str(path).startswith(part.mountpoint) and (best is None or len(part.mountpoint) > len(best.mountpoint)):
            best = part
    if best is None:
        return "unknown"
    device = best.device
    kind = ""
    name = Path(device).name
    rotational = Path(f"/sys/block/{name}/queue/rotational")
    if rotational.exists():
        kind = "the kernel flags it rotational" if rotational.read_text().strip() == "1" else "not rotational"
        if name.startswith("vd"):
            kind = f"virtio virtual disk; {kind}"
    return f"{best.fstype} on {device}" + (f" ({kind})" if kind else "") + f", mounted at {best.mountpoint}"


def _git_head() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} / {five:.2f} / {fifteen:.2f}"


def describe(workdir: Path, postgres: list[str]) -> list[tuple[str, str]]:
    """Return ``(what, value)`` rows describing this machine, for the report's header table."""
    mem = psutil.virtual_memory()
    return [
        ("CPU", f"{_cpu_model()}, {psutil.cpu_count(logical=True)} logical cores"
                f" ({psutil.cpu_count(logical=False) or '?'} physical)"),
        ("Memory", f"{mem.total / 2**30:.1f} GiB"),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Disk under the SQLite files", _filesystem(workdir)),
        ("Python", f"{platform.python_implementation()} {sys.version.split()[0]}"),
        ("SQLite", f"{sqlite3.sqlite_version} (Python's sqlite3 module)"),
        ("Postgres", "; ".join(postgres) if postgres else "not used in this run"),
        ("Load average at start (1/5/15 min)", load_average()),
        ("Project commit", _git_head()),
    ]
