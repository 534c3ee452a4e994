"""The built wheel, installed into a fresh venv, used from a bot project with its own ``bot``.

Most discord.py tutorials start a bot as ``bot.py`` (or a ``bot/`` package); our own example bot
is also called ``bot``, so ``discord_outbox`` must work without it. The wheel is built from a copy
of the sources (nothing written into the work tree), installed with ``--no-deps`` into a venv
made with this interpreter; its dependencies come from the test venv's site-packages through a
``.pth`` line, which puts that directory on the path after the venv's own (so the wheel's copy of
our packages wins, and the editable install's finder is never loaded).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ("setup.cfg", "pyproject.toml", "README.md", "outbox", "shipper", "discord_outbox", "bot")

USER_BOT_PY = '''\
"""A user's own bot module: it shadows any other top-level ``bot``."""
TOKEN = "not ours"
'''

USER_MAIN = '''\
import asyncio, json, sqlite3, sys

import bot  # the user's bot.py, not ours
import mybot.bot  # and a package of theirs with a bot module too
import discord
from discord import app_commands

from discord_outbox import CommandLog, InMemorySink, Outbox, OutboxError, Shipper, log_commands


async def main(path):
    client = discord.Client(intents=discord.Intents.none())
    tree = app_commands.CommandTree(client)
    async with Outbox(path) as ob:
        log = log_commands(tree, ob)
        assert isinstance(log, CommandLog) and log.attached
        await ob.append("command_calls", {"discord_uid": 1, "command": "hello", "outcome": "ok"})
        log.detach()
    print(json.dumps({
        "user_bot": bot.TOKEN,
        "discord_outbox": sys.modules["discord_outbox"].__file__,
        "rows": sqlite3.connect(path).execute("SELECT count(*) FROM events").fetchone()[0],
        "names": [Shipper.__name__, InMemorySink.__name__, OutboxError.__name__],
    }))


asyncio.run(main(sys.argv[1]))
'''


def _site_packages(prefix: Path) -> Path:
    return Path(sysconfig.get_path("purelib", vars={"base": str(prefix), "platbase": str(prefix)}))


def test_wheel_installs_and_works_beside_a_users_own_bot_module(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in SOURCES:
        item = ROOT / name
        if item.is_dir():
            shutil.copytree(item, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(item, src / name)
    dist = tmp_path / "dist"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", str(src), "-w", str(dist)], check=True, timeout=180)
    (wheel,) = dist.glob("discord_outbox-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    subprocess.run([*pip, "--python", str(python), "install", "--no-deps", "--no-index", str(wheel)], check=True, timeout=120)
    (_site_packages(env_dir) / "zz_test_deps.pth").write_text(str(_site_packages(Path(sys.prefix))) + "\n")

    project = tmp_path / "userproject"
    (project / "mybot").mkdir(parents=True)
    (project / "bot.py").write_text(USER_BOT_PY)
    (project / "mybot" / "__init__.py").write_text("")
    (project / "mybot" / "bot.py").write_text("")
    (project / "main.py").write_text(USER_MAIN)
    done = subprocess.run(
        [str(python), "main.py", str(tmp_path / "events.db")],
        cwd=project, capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["user_bot"] == "not ours"
    assert out["discord_outbox"].startswith(str(env_dir))  # the wheel's copy, not the work tree's
    assert out["rows"] == 1
    assert out["names"] == ["Shipper", "InMemorySink", "OutboxError"]


def test_a_users_bot_package_does_not_break_discord_outbox(tmp_path: Path) -> None:
    """A ``bot/`` package of the user's, first on the path: nothing we import reaches for it."""
    project = tmp_path / "userproject"
    (project / "bot").mkdir(parents=True)
    (project / "bot" / "__init__.py").write_text('raise ImportError("the user\'s bot package was imported")\n')
    code = "import discord_outbox, sys; assert 'bot' not in sys.modules; print(discord_outbox.log_commands.__module__)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=project, capture_output=True, text=True, timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(project)},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "discord_outbox.commandlog"
