"""Looking needs no write access: ``outbox status``, ``export`` and ``dead list`` as a user who can
only read the files, and on a read-only mount, with and without a live writer beside them.

Each command runs as a real child process. As root (CI), the child runs with every capability
dropped (``setpriv --bounding-set=-all``), so file modes bind it as they bind any other user;
the read-only bind mounts need root and are skipped otherwise.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from subprocess import PIPE

import pytest

from outbox import Outbox, OutboxReader
from outbox.reader import Event

from cli_support import fill, run, script_path
from pgproxy import PgProxy

ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not ROOT or shutil.which("mount") is None, reason="a bind mount needs root")


def looking(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``outbox ARGS`` as a process that cannot write what the file modes forbid."""
    prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if ROOT else []
    return subprocess.run(
        [*prefix, str(script_path("outbox")), *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )


def snapshot(d: Path) -> dict[str, tuple[int, int, int]]:
    """Every file in ``d``: size, mtime, mode (what looking must not change)."""
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns, p.stat().st_mode) for p in sorted(d.iterdir())}


async def shipped_with_a_dead_letter(path: Path, n: int = 20) -> None:
    """``n`` events; the first 10 shipped, one of them (seq 3) a dead letter."""
    await fill(path, n)
    async with OutboxReader(path, create=True) as reader:
        (ev,) = [e for e in await reader.read_pending(10) if e.seq == 3]
        await reader.set_aside([(Event(*ev), "refused by Postgres")])
        await reader.advance(10)


def in_a_dir(tmp_path: Path) -> Path:
    """``tmp_path/d/events.db``: the outbox alone in a directory of its own."""
    d = tmp_path / "d"
    d.mkdir()
    return d / "events.db"


@contextmanager
def read_only_files(d: Path) -> Iterator[None]:
    """Files 0444 and their directory 0555 (put back after, so tmp_path can be cleaned)."""
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in [d, *d.iterdir()]}
    for p in d.iterdir():
        p.chmod(0o444)
    d.chmod(0o555)
    try:
        yield
    finally:
        for p, mode in modes.items():
            if p.exists():
                p.chmod(mode)
        for p in d.iterdir():
            p.chmod(stat.S_IMODE(p.stat().st_mode) | 0o200)


@contextmanager
def read_only_mount(d: Path, at: Path) -> Iterator[Path]:
    """``d`` bind-mounted read-only at ``at``."""
    at.mkdir()
    subprocess.run(["mount", "--bind", str(d), str(at)], check=True)
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(at)], check=True)
        yield at
    finally:
        subprocess.run(["umount", str(at)], check=True)


def assert_looks(path: Path, env: dict[str, str], pending: int, total: int) -> None:
    """``status``, ``export`` and ``dead list`` succeed and see every event, the live ones too."""
    status = looking("status", str(path), "--json", env=env)
    assert status.returncode == 0, status.stderr
    counts = json.loads(status.stdout)
    assert (counts["pending"], counts["shipped"], counts["dead"]) == (pending, 9, 1), counts
    export = looking("export", str(path), env=env)
    assert export.returncode == 0, export.stderr
    assert len(export.stdout.splitlines()) == total
    dead = looking("dead", "list", str(path), env=env)
    assert dead.returncode == 0, dead.stderr
    assert "refused by Postgres" in dead.stdout


def test_a_user_who_can_only_read_can_look(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    path = in_a_dir(tmp_path)
    run(shipped_with_a_dead_letter(path))
    d = path.parent
    before = snapshot(d)
    with read_only_files(d):
        assert_looks(path, subprocess_env, pending=10, total=20)
        after = snapshot(d)
    assert after.keys() == before.keys(), "looking made a file"
    assert {k: v[:2] for k, v in after.items()} == {k: v[:2] for k, v in before.items()}, "looking changed a file"


@pytest.mark.skipif(not ROOT, reason="a writer beside a read-only user: only root can write where it cannot")
def test_a_user_who_can_only_read_sees_a_live_writers_events(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    path = in_a_dir(tmp_path)
    run(shipped_with_a_dead_letter(path))
    d = path.parent
    path.chmod(0o644)  # the writer's -wal and -shm get the same mode: readable by the looker

    async def live() -> None:
        async with Outbox(path) as ob:
            for i in range(5):
                await ob.append("late", {"i": i})  # in the -wal, not checkpointed
            assert Path(f"{path}-wal").exists()
            with read_only_files(d):
                assert_looks(path, subprocess_env, pending=15, total=25)  # the writer still open

    run(live())


@needs_root
def test_looking_through_a_read_only_mount(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    path = in_a_dir(tmp_path)
    run(shipped_with_a_dead_letter(path))
    d = path.parent
    before = snapshot(d)
    with read_only_mount(d, tmp_path / "ro") as ro:
        assert_looks(ro / "events.db", subprocess_env, pending=10, total=20)
    assert snapshot(d) == before

    async def live() -> None:
        async with Outbox(path) as ob:
            for i in range(5):
                await ob.append("late", {"i": i})
            with read_only_mount(d, tmp_path / "ro2") as ro:
                assert_looks(ro / "events.db", subprocess_env, pending=15, total=25)

    run(live())


def test_a_write_without_write_access_names_the_file(tmp_path: Path, subprocess_env: dict[str, str]) -> None:
    path = in_a_dir(tmp_path)
    run(shipped_with_a_dead_letter(path))
    d = path.parent
    with read_only_files(d):
        retry = looking("dead", "retry", str(path), env=subprocess_env)
    assert retry.returncode == 3, (retry.stdout, retry.stderr)
    (line,) = retry.stderr.splitlines()
    assert f"cannot open {path}-ship for writing" in line and "ermission denied" in line, line
    assert "Traceback" not in retry.stderr


async def test_a_shipper_that_cannot_write_the_side_file_names_it(
    tmp_path: Path, subprocess_env: dict[str, str], pg_dsn: str
) -> None:
    """It used to blame Postgres ("cannot reach Postgres at ...: Permission denied").

    Postgres through a loopback proxy: the child may not reach the embedded server's socket.
    """
    path = in_a_dir(tmp_path)
    await shipped_with_a_dead_letter(path)
    side = Path(f"{path}-ship")
    side.chmod(0o444)
    proxy = PgProxy(pg_dsn)
    await proxy.start()
    try:
        prefix = ["setpriv", "--bounding-set=-all", "--inh-caps=-all"] if ROOT else []
        args = ["drain", "--outbox", str(path), "--dsn", proxy.dsn, "--timeout", "30"]
        child = await asyncio.create_subprocess_exec(
            *prefix, str(script_path("shipper")), *args, env=subprocess_env, stdout=PIPE, stderr=PIPE
        )
        out, err = await asyncio.wait_for(child.communicate(), 120)
    finally:
        await proxy.cut()
        side.chmod(0o600)
    assert child.returncode == 3, (out, err)
    (line,) = err.decode().splitlines()
    assert f"cannot open {side} for writing: permission denied" in line, line
    assert "Postgres" not in line


@needs_root
def test_a_side_file_of_another_outbox_on_a_read_only_mount_is_left_alone(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """A writer moves it aside; a reader that cannot write reads an empty one instead."""
    path = in_a_dir(tmp_path)
    run(shipped_with_a_dead_letter(path))
    d = path.parent
    other = tmp_path / "other.db"
    run(shipped_with_a_dead_letter(other, n=30))
    Path(f"{path}-ship").write_bytes(Path(f"{other}-ship").read_bytes())  # not this outbox's
    before = snapshot(d)
    with read_only_mount(d, tmp_path / "ro") as ro:
        status = looking("status", str(ro / "events.db"), "--json", env=subprocess_env)
    assert status.returncode == 0, status.stderr
    assert (json.loads(status.stdout)["pending"], json.loads(status.stdout)["dead"]) == (20, 0)
    assert snapshot(d) == before


def test_a_wal_stranded_without_its_shm_is_one_line_naming_the_files(
    tmp_path: Path, subprocess_env: dict[str, str]
) -> None:
    """A writer killed (its -wal and -shm left), then the -shm deleted: nothing can index the -wal."""
    path = in_a_dir(tmp_path)
    d = path.parent
    killed = (
        "import asyncio, os, sys\nfrom outbox import Outbox\nasync def main():\n"
        "    ob = await Outbox(sys.argv[1]).open()\n    for i in range(5):\n        await ob.append('t', {'i': i})\n"
        "    os._exit(0)\nasyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", killed, str(path)], check=True, env=subprocess_env, timeout=60)
    assert Path(f"{path}-wal").stat().st_size > 0
    Path(f"{path}-shm").unlink()
    with read_only_files(d):
        status = looking("status", str(path), env=subprocess_env)
    assert status.returncode == 3, (status.stdout, status.stderr)
    (line,) = status.stderr.splitlines()
    assert f"cannot read outbox {path}: its events.db-wal holds events" in line and "events.db-shm" in line, line
