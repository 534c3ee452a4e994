"""A sidecar shipper with its housekeeping rhythm exposed, to be killed during the retention pass.

Usage: python torture_sidecar.py PATH DSN READY [--batch-size N] [--retention S] [--housekeeping S]

``shipper run`` prunes and checkpoints once a minute; this runs the same ``Shipper`` with the
pass as often as asked (``--housekeeping 0`` means after every batch), so a kill lands in it.
Creates READY once shipping has started; SIGTERM drains and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

from shipper import Shipper


async def main(args: argparse.Namespace) -> None:
    shipper = Shipper(
        args.path,
        args.dsn,
        batch_size=args.batch_size,
        flush_interval=0.01,
        retention_s=args.retention,
        housekeeping_interval=args.housekeeping,
        backoff_cap=0.5,
        stop_timeout=30,
    )
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, shipper.request_stop)
    await shipper.start()
    Path(args.ready).touch()
    await shipper.serve()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("path")
    parser.add_argument("dsn")
    parser.add_argument("ready")
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--retention", type=float, default=0.0)
    parser.add_argument("--housekeeping", type=float, default=0.0)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(parser.parse_args()))
