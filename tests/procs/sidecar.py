"""A sidecar shipper for the crash tests: ships PATH to DSN until SIGTERM, then drains and exits 0.

Usage: python sidecar.py PATH DSN [BATCH_SIZE [LEASE_TTL]]. Prints "ready" once shipping has started.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from shipper import Shipper


async def main(path: str, dsn: str, batch_size: int, lease_ttl: float) -> None:
    shipper = Shipper(path, dsn, batch_size=batch_size, flush_interval=0.02, stop_timeout=30, lease_ttl=lease_ttl)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, shipper.request_stop)
    await shipper.start()
    print("ready", flush=True)
    await shipper.serve()
    print(f"shipped {shipper.stats.shipped}", flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    batch = int(sys.argv[3]) if len(sys.argv) > 3 else 500
    asyncio.run(main(sys.argv[1], sys.argv[2], batch, float(sys.argv[4]) if len(sys.argv) > 4 else 30.0))
