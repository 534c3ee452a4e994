"""Append events until killed, writing each acknowledged id to a file: the torture suite's victim.

Usage: python torture_appender.py PATH ACKS WRITER READY [--durability D] [--checkpoint-every N]
[--count N] [--go FILE] [--on-corrupt raise|quarantine] [--topic T] [--pad N]

Creates READY once the outbox is open (after waiting for ``--go`` to exist, if given, so several
processes can start together). Each id goes to ACKS in one unbuffered ``write`` after ``append``
returned, so the file lists exactly the acknowledged events (a kill may cut the last line short).
Payloads carry ``k = WRITER:i``, unique per event, so Postgres can count repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from pathlib import Path

from outbox import Outbox


async def main(args: argparse.Namespace) -> None:
    if args.go:
        while not Path(args.go).exists():
            time.sleep(0.001)
    acks = os.open(args.acks, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    outbox = Outbox(
        args.path, durability=args.durability, checkpoint_every=args.checkpoint_every, on_corrupt=args.on_corrupt
    )
    async with outbox as ob:
        Path(args.ready).touch()
        pad = "x" * args.pad
        for i in range(args.count):
            event_id = await ob.append(args.topic, {"k": f"{args.writer}:{i}", "w": args.writer, "i": i, "pad": pad})
            os.write(acks, (event_id + "\n").encode())
    os.close(acks)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("acks")
    parser.add_argument("writer")
    parser.add_argument("ready")
    parser.add_argument("--durability", default="process", choices=["process", "power"])
    parser.add_argument("--checkpoint-every", type=int, default=1000)
    parser.add_argument("--count", type=int, default=sys.maxsize)
    parser.add_argument("--go", default="")
    parser.add_argument("--on-corrupt", default="raise", choices=["raise", "quarantine"])
    parser.add_argument("--topic", default="t")
    parser.add_argument("--pad", type=int, default=100)
    asyncio.run(main(parser.parse_args()))
