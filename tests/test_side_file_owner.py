"""A side file made by someone else (root running ``outbox status``) belongs to the events file's owner.

Before, it was root's, mode 0600: the bot's own user could no longer open it, and its shipper
failed with an error that blamed Postgres.
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
        async with OutboxReader(outbox_path) as reader:  # what `outbox status` does, as root
            assert (await reader.status()).pending == 1
    finally:
        os.umask(old)
    st = os.stat(ship_path(outbox_path))
    assert (st.st_uid, st.st_gid) == (BOT_UID, BOT_GID)
    assert stat.S_IMODE(st.st_mode) == 0o640


async def test_a_side_file_made_by_the_owner_is_private(outbox_path: Path) -> None:
    async with Outbox(outbox_path) as ob:
        await ob.append("t", {"a": 1})
    async with OutboxReader(outbox_path):
        pass
    st = os.stat(ship_path(outbox_path))
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o600)
