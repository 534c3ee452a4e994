"""``python -m bot``: the ladder bot's command line; a Ctrl-C while discord.py loads is one line."""

from collections.abc import Callable

from shipper.console import start_guarded


def _load() -> Callable[[], None]:
    from .cli import main

    return main


start_guarded("bot", _load)
