"""An in-process shipper learns of other processes' writes from the file itself (inotify), so an
idle bot looks about once a second instead of every ``flush_interval``, and still ships another
process's event at once; where no watch can be had, it polls as before."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest

from outbox import Outbox
from shipper import Shipper, filewatch
from shipper.migrate import migrate
from shipper.wakeup import QUIET_LOOKS, Wakeup

from test_inprocess_shipper import wait_for_rows

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="inotify is Linux's")

APPEND_ONE = "import asyncio, sys\nfrom outbox import Outbox\n" \
    "async def main():\n    async with Outbox(sys.argv[1]) as ob:\n        print(await ob.append('t', {'from': 'elsewhere'}))\n" \
    "asyncio.run(main())\n"


def append_elsewhere(path: Path, env: dict[str, str]) -> str:
    """Append one event from another process; its id."""
    done = subprocess.run([sys.executable, "-c", APPEND_ONE, str(path)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@linux_only
def test_a_watch_reports_writes_by_another_process_then_nothing_then_the_file_gone(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"")
    w = filewatch.watch(target)
    assert w is not None
    try:
        assert not w.changed()
        subprocess.run([sys.executable, "-c", f"open({str(target)!r}, 'ab').write(b'x')"], check=True, timeout=60)
        assert w.changed()
        assert not w.changed()  # read once, reported once
        assert not w.lost
        target.unlink()
        assert w.changed() and w.lost
    finally:
        w.close()
    assert filewatch.watch(tmp_path / "missing") is None


@linux_only
async def test_a_still_file_is_slept_on_and_a_write_ends_the_sleep(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_bytes(b"")
    wakeup = Wakeup(watch=filewatch.watch(target), watched=60)
    for _ in range(QUIET_LOOKS):  # the looks after a change poll: a commit shows a moment late
        assert not wakeup.watching
        await wakeup.wait(0.001)
    assert wakeup.watching
    sleeping = asyncio.ensure_future(wakeup.wait(0.001))  # 60 s now, unless the file changes
    await asyncio.sleep(0.1)
    assert not sleeping.done()
    await asyncio.to_thread(target.write_bytes, b"changed")
    async with asyncio.timeout(20):
        await sleeping
    assert not wakeup.watching  # a change: poll again for QUIET_LOOKS looks
    assert wakeup.watch is not None


@linux_only
async def test_an_idle_in_process_shipper_ships_another_process_event_without_polling(
    outbox_path: Path, pg_dsn: str, subprocess_env: dict[str, str]
) -> None:
    """flush_interval=0.05 and two idle seconds: polling would look 40 times; the watch looks a
    few. Then another process's append ships at once, though no append of this process woke it."""
    await migrate(pg_dsn)
    async with Outbox(outbox_path) as ob:
        async with Shipper(outbox_path, pg_dsn, outbox=ob, flush_interval=0.05) as s:
            await ob.append("t", {"first": True})
            await s.drain(timeout=30)
            await asyncio.sleep(0.5)  # the still looks pass
            looks = s._wakeup.looks
            await asyncio.sleep(2.0)
            assert s._wakeup.looks - looks <= 6, "an idle shipper should sleep on the file's watch"
            s._wakeup.watched = 60.0  # only the watch can wake it in time now
            event_id = await asyncio.to_thread(append_elsewhere, outbox_path, subprocess_env)
            assert event_id in await wait_for_rows(pg_dsn, [event_id], 20), "the other process's write did not wake it"


async def test_without_a_watch_the_shipper_polls_for_other_writers(
    outbox_path: Path, pg_dsn: str, subprocess_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(filewatch, "watch", lambda path: None)  # macOS, Windows, no WAL: no watch
    await migrate(pg_dsn)
    async with Outbox(outbox_path) as ob:
        async with Shipper(outbox_path, pg_dsn, outbox=ob, flush_interval=0.05) as s:
            await s.drain(timeout=30)
            assert s._wakeup.watch is None
            looks = s._wakeup.looks
            event_id = await asyncio.to_thread(append_elsewhere, outbox_path, subprocess_env)
            assert event_id in await wait_for_rows(pg_dsn, [event_id], 20)
            assert s._wakeup.looks > looks


@linux_only
async def test_a_sleep_on_the_watch_ends_in_time_to_renew_the_lease(
    outbox_path: Path, pg_dsn: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A lease of 0.9 s is renewed every 0.3 s: the 1 s sleep on a still file must not outlast it."""
    await migrate(pg_dsn)
    caplog.set_level(logging.WARNING, logger="shipper")
    async with Outbox(outbox_path) as ob:
        async with Shipper(outbox_path, pg_dsn, outbox=ob, lease_ttl=0.9) as s:
            await ob.append("t", {"first": True})
            await s.drain(timeout=30)
            lapsed = 0
            for _ in range(60):  # 3 s, the lease's expiry sampled every 50 ms
                await asyncio.sleep(0.05)
                lapsed += time.monotonic() > s._lease._expires
            assert s._wakeup.watch is not None
            assert lapsed == 0, f"the lease lapsed in {lapsed} of 60 samples"
            assert "lost the lease" not in caplog.text
            event_id = await ob.append("t", {"after": "idle"})
            await s.drain(timeout=30)
            assert event_id in await wait_for_rows(pg_dsn, [event_id], 20)
