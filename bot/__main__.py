"""``python -m bot``: the ladder bot's command line."""

from .cli import main

main()
