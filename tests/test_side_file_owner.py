"""Looking creates nothing; a side file made by someone else belongs to the events file's owner.

``outbox status`` run as root used to create a root-owned ``-ship`` (mode 0600): the bot's own
user could no longer open it, and its shipper failed with an error that blamed Postgres. Now the
read-only commands create and change nothing, and a side file that must be made (a shipper run
as root) gets the events file's owner and mode.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from outbox import Outbox, OutboxReader, ship_path

BOT_UID = BOT_GID = 65534  # "nobody": some other user than the one running the tests


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can hand a file to another user")
async def test_a_side_file_made_by_root_gets_the_events_files_owner_and_mode(outbox_path: Path) -> None:
    async with Outbox(outbox_path) as ob:
        await ob.append("t", {"a": 1})
    os.chown(outbox_path, BOT_UID, BOT_GID)
    os.chmod(outbox_path, 0o640)
    assert not ship_path(outbox_path).exists()
    old = os.umask(0o077)
    try:
        async with OutboxReader(outbox_path, create=True) as reader:  # a shipper run as root
            assert (await reader.status()).pending == 1
    finally:
        os.umask(old)
    st = os.stat(ship_path(outbox_path))
    assert (st.st_uid, st.st_gid) == (BOT_UID, BOT_GID)
    assert stat.S_IMODE(st.st_mode) == 0o640


async def test_a_side_file_made_by_the_owner_is_private(outbox_path: Path) -> None:
    async with Outbox(outbox_path) as ob:
        await ob.append("t", {"a": 1})
    async with OutboxReader(outbox_path, create=True):
        pass
    st = os.stat(ship_path(outbox_path))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o600)


async def test_looking_creates_and_changes_nothing(outbox_path: Path, tmp_path: Path) -> None:
    """``outbox status``, ``export``, ``dead list``: on a file never shipped, and on a copy."""
    async with Outbox(outbox_path) as ob:
        await ob.append("t", {"a": 1})
    before = sorted(os.listdir(tmp_path))
    async with OutboxReader(outbox_path) as reader:
        assert (await reader.status()).pending == 1
        assert await reader.dead_letters() == []
        assert [e.topic async for chunk in reader.iter_events() for e in chunk] == ["t"]
    assert sorted(os.listdir(tmp_path)) == before, "looking made a file"
    copy = tmp_path / "copy.db"
    copy.write_bytes(outbox_path.read_bytes())
    async with OutboxReader(copy) as reader:
        looked = reader.outbox_id
    async with OutboxReader(outbox_path) as reader:
        assert looked == reader.outbox_id, "looking at a copy must not fork it"
    assert not ship_path(copy).exists()
    async with OutboxReader(outbox_path) as reader:  # a first write makes the side file after all
        assert await reader.retry_dead() == 0
        await reader.set_error("x")
    assert ship_path(outbox_path).exists()
