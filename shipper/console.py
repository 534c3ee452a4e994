"""The console scripts' entry points: Ctrl-C during start-up is one line too, never a traceback.

Importing a command line takes a few tenths of a second (asyncio, asyncpg, click, the outbox);
a SIGINT in that time would print a ``KeyboardInterrupt`` traceback from whichever import it
hit. So the first thing each script does is take SIGINT over with a handler that says
``TOOL: error: interrupted`` and exits 130, as the commands themselves do; once the imports are
done, Python's own handler is back and the command's handling (one line, code 130) applies.
This module imports nothing heavy and ``shipper/__init__`` imports nothing at all.
"""

from __future__ import annotations

import os
import signal

TYPE_CHECKING = False  # typing itself is one of the imports that would delay the guard (~4 ms)
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any

__all__ = ["outbox", "shipper", "start_guarded"]


def _quietly_interrupted(tool: str) -> Callable[[int, FrameType | None], Any]:
    def handler(signum: int, frame: FrameType | None) -> Any:
        os.write(2, f"{tool}: error: interrupted\n".encode())
        os._exit(130)

    return handler


def start_guarded(tool: str, load: Callable[[], Callable[[], None]]) -> None:
    """Run the command line ``load()`` imports, a Ctrl-C during the import being one line."""
    previous = signal.getsignal(signal.SIGINT)
    guarded = previous is signal.default_int_handler  # an ignored SIGINT (nohup, &) stays ignored
    if guarded:
        signal.signal(signal.SIGINT, _quietly_interrupted(tool))
    main = load()
    if guarded:
        signal.signal(signal.SIGINT, previous)
    main()


def _load_shipper() -> Callable[[], None]:
    from .cli import main

    return main


def _load_outbox() -> Callable[[], None]:
    from .outbox_cli import main

    return main


def shipper() -> None:
    """Run the ``shipper`` command line."""
    start_guarded("shipper", _load_shipper)


def outbox() -> None:
    """Run the ``outbox`` command line."""
    start_guarded("outbox", _load_outbox)
