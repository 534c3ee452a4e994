"""The ``shipper`` command line: the sidecar (``run``), a one-off ``drain``, and ``migrate``."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from outbox import OutboxError, OutboxReader
from outbox.clilog import log_to_stderr
from outbox.clitools import (
    CONTEXT_SETTINGS,
    EXIT_OUTBOX,
    CliGroup,
    DurationType,
    FilePath,
    dsn_option,
    echo_json,
    progress,
    run,
)
from outbox.clitools import SHIPPER_EXIT_CODES_HELP as EXIT_CODES_HELP
from outbox.report import counted

from .dsn import redact_dsn
from .batching import MAX_BATCH_BYTES
from .collector import for_shipping
from .errors import ShipperError
from .loop import Shipper, ShipperStats
from .migrate import migrate as migrate_schema
from .outbox_cli import register_postgres_errors, route_option, schema_option
from .partitions import PERIODS
from .pgsink import PostgresSink

__all__ = ["shipper", "main", "ShipperSettings"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class ShipperSettings:
    """What the command line says about how to ship (the ``Shipper`` constructor's options)."""

    outbox_path: Path
    dsn: str
    batch_size: int = 1000
    flush_interval: float = 0.05
    metrics_port: int | None = None
    metrics_addr: str = "127.0.0.1"
    retention_s: float = 7 * 86400
    stop_timeout: float = 10.0
    schema: str = "public"
    lease_ttl: float = 30.0
    routes: dict[str, str] = field(default_factory=dict)
    pg_retention_s: float | None = None
    grow_batches: bool = True  # False: batch_size is a hard limit (an explicit --batch-size)

    def sink(self, lock_timeout: float = 5.0) -> PostgresSink:
        """The Postgres sink these settings describe."""
        return PostgresSink(
            self.dsn,
            schema=self.schema,
            batch_timeout=self.lease_ttl,
            lock_timeout=lock_timeout,
            routes=self.routes,
            pg_retention_s=self.pg_retention_s,
        )

    def make(self, sink: PostgresSink | None = None) -> Shipper:
        """Build the shipper these settings describe."""
        return Shipper(
            self.outbox_path,
            None if sink is not None else self.dsn,
            sink=sink,
            schema=self.schema,
            lease_ttl=self.lease_ttl,
            max_batch_bytes=MAX_BATCH_BYTES if self.grow_batches else 0,
            batch_size=self.batch_size,
            flush_interval=self.flush_interval,
            metrics_port=self.metrics_port,
            metrics_addr=self.metrics_addr,
            retention_s=self.retention_s,
            stop_timeout=self.stop_timeout,
            routes=None if sink is not None else self.routes,  # a sink given has them already
            pg_retention_s=None if sink is not None else self.pg_retention_s,
        )


@click.group(cls=CliGroup, context_settings=CONTEXT_SETTINGS, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="discord-outbox", message="%(prog)s %(version)s")
def shipper() -> None:
    """Ship a local outbox to Postgres, exactly once in effect.

    \b
    Examples:
      shipper migrate --dsn postgresql://bot:secret@db/bot
      shipper run --outbox events.db --dsn postgresql://bot:secret@db/bot --metrics-port 9464
      shipper drain --outbox events.db     # with OUTBOX_DSN or DATABASE_URL set
    """


assert isinstance(shipper, CliGroup)
shipper.register_error(OutboxError, EXIT_OUTBOX)
shipper.register_error(OSError, EXIT_OUTBOX)
register_postgres_errors(shipper)


def _shipping_options(func: Callable[..., Any]) -> Callable[..., Any]:
    options: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
        click.option(
            "--outbox",
            "outbox_path",
            envvar="OUTBOX_PATH",
            show_envvar=True,
            required=True,
            type=FilePath(),
            metavar="PATH",
            help="The outbox file (created if missing).",
        ),
        dsn_option(),
        schema_option,
        click.option(
            "--lease-ttl",
            type=click.FloatRange(min=0.1),
            default=30.0,
            show_default=True,
            metavar="SECONDS",
            help="The lease on the outbox lasts this long unrenewed: a standby takes over about this long"
            " after the leader dies or freezes.",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=1000,
            show_default=True,
            help="Most events per batch when given; by default batches start at 1000 and grow while a backlog"
            " waits, until a round trip is about 5% of a batch (a distant Postgres: up to about 8 MiB).",
        ),
        click.option(
            "--flush-interval",
            type=click.FloatRange(min=0.001),
            default=0.05,
            show_default=True,
            metavar="SECONDS",
            help="How often to look for new events when idle.",
        ),
        click.option(
            "--metrics-port",
            type=click.IntRange(min=1, max=65535),
            help="Serve Prometheus metrics on http://ADDR:PORT/metrics.",
        ),
        click.option(
            "--metrics-addr",
            default="127.0.0.1",
            show_default=True,
            metavar="ADDR",
            help="The address the metrics listen on; 0.0.0.0 lets a Prometheus in another container scrape them.",
        ),
        click.option(
            "--retention",
            type=DurationType(),
            default="7d",
            show_default=True,
            help="Keep shipped events this long for replay and verify, then prune them.",
        ),
        click.option(
            "--stop-timeout",
            type=click.FloatRange(min=0),
            default=10.0,
            show_default=True,
            metavar="SECONDS",
            help="On stop, ship what is pending for up to this long; the rest stays in the outbox.",
        ),
        route_option(),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _log_options(default_level: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def decorate(func: Callable[..., Any]) -> Callable[..., Any]:
        func = click.option(
            "--log-format",
            type=click.Choice(["text", "json"], case_sensitive=False),
            default="text",
            show_default=True,
            envvar="SHIPPER_LOG_FORMAT",
            show_envvar=True,
            help="One line per record on stderr; json for log collectors. Passwords are never logged.",
        )(func)
        return click.option(
            "--log-level",
            type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
            default=default_level,
            show_default=True,
            envvar="SHIPPER_LOG_LEVEL",
            show_envvar=True,
        )(func)

    return decorate


def _settings(options: dict[str, Any]) -> ShipperSettings:
    return ShipperSettings(
        outbox_path=options["outbox_path"],
        dsn=options["dsn"],
        batch_size=options["batch_size"],
        flush_interval=options["flush_interval"],
        metrics_port=options["metrics_port"],
        metrics_addr=options["metrics_addr"],
        retention_s=options["retention"],
        stop_timeout=options["stop_timeout"],
        schema=options["schema"],
        lease_ttl=options["lease_ttl"],
        routes=options["routes"],
        pg_retention_s=options.get("pg_retention"),
        grow_batches=click.get_current_context().get_parameter_source("batch_size") is ParameterSource.DEFAULT,
    )


async def _start(settings: ShipperSettings, s: Shipper | None = None) -> Shipper:
    """Start a shipper; a metrics port that cannot be served is the operator's to fix, at once."""
    s = settings.make() if s is None else s
    try:
        await s.start()
    except OSError as exc:
        await s.stop()
        if settings.metrics_port is not None and exc.errno in (errno.EADDRINUSE, errno.EACCES):
            raise click.ClickException(
                f"cannot serve metrics on {settings.metrics_addr}:{settings.metrics_port}: {exc.strerror}"
            ) from None
        raise
    return s


# -- run -----------------------------------------------------------------------------------------


async def _serve(settings: ShipperSettings) -> ShipperStats:
    s = settings.make()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT)
    for sig in signals:  # before starting: a start on a full disk waits for room, and may be stopped
        loop.add_signal_handler(sig, _stop_on_signal, s, sig)
    try:
        await _start(settings, s)
        await s.serve()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
    return s.stats


def _stop_on_signal(s: Shipper, sig: signal.Signals) -> None:
    log.info("%s received: shipping what is pending, then stopping", sig.name)
    s.request_stop()


@shipper.command("run", epilog=EXIT_CODES_HELP)
@_shipping_options
@_log_options("info")
@click.option(
    "--pg-retention",
    type=DurationType(),
    default=None,
    help="Drop whole Postgres partitions older than this (tables made with `migrate --partition`). Default: keep all.",
)
def run_(log_level: str, log_format: str, **options: Any) -> None:
    """Ship continuously: the sidecar next to your bot.

    Ships every new event within about --flush-interval, survives Postgres outages (events wait
    in the outbox, retried with backoff), and on SIGTERM or SIGINT ships what is pending (up to
    --stop-timeout) and exits 0. Only one shipper per outbox ships at a time; a second one
    stands by.

    \b
    Examples:
      shipper run --outbox /var/lib/bot/events.db --dsn postgresql://bot:secret@db/bot
      OUTBOX_PATH=events.db DATABASE_URL=postgresql://bot@db/bot shipper run --log-format json
    """
    settings = _settings(options)
    for_shipping()  # this process only ships (see shipper.collector)
    with log_to_stderr(log_level, log_format):
        stats = run(_serve(settings))
        log.info("stopped: shipped %d events (%d dead letters, %d retries)", stats.shipped, stats.dead, stats.retries)


# -- drain ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DrainResult:
    """What a drain did, and what the outbox holds once it has stopped."""

    stats: ShipperStats
    pending: int
    dead: int
    timed_out: bool
    failure: Exception | None = None  # what stopped the drain early, raised once the result is out

    def as_json(self) -> dict[str, Any]:
        """The shape ``shipper drain --json`` prints."""
        return {
            "shipped": self.stats.shipped,
            "pending": self.pending,
            "dead": self.dead,
            "refused": self.stats.dead,
            "retries": self.stats.retries,
            "timed_out": self.timed_out,
        }


async def _drain(settings: ShipperSettings, timeout: float | None) -> DrainResult:
    # One connection, its tables (and routes) checked once, opened here so that an unreachable
    # Postgres, a missing table, route or GRANT fails at once, clearly; lock waits fit --timeout.
    sink = settings.sink(lock_timeout=min(5.0, timeout) if timeout is not None else 5.0)
    try:
        async with asyncio.timeout(timeout):
            await sink.open()
    except asyncio.TimeoutError:
        await sink.close()
        raise ShipperError(f"drain timed out after {timeout:g} s connecting to {redact_dsn(settings.dsn)}") from None
    except BaseException:
        await sink.close()
        raise
    async with OutboxReader(settings.outbox_path, create=True) as reader:
        pending = (await reader.status()).pending
    s = await _start(settings, settings.make(sink))
    timed_out = False
    failure: BaseException | None = None
    draining: asyncio.Future[int] | None = None
    try:
        with progress("shipping", pending) as update:
            watcher = asyncio.create_task(_watch(s, update))
            draining = asyncio.ensure_future(s.drain())
            try:
                # not wait_for: on 3.11 a cancellation that meets the drain's own wait is lost, and
                # wait_for then returns as if the drain had finished in time, having shipped it all
                await asyncio.wait({draining}, timeout=timeout)
                if draining.done():
                    failure = draining.exception()
                else:
                    timed_out = True
                    s.halt()  # out of time: finish the batch in flight, ship nothing more
            finally:
                watcher.cancel()
                draining.cancel()
            update(s.stats.shipped + s.stats.dead)
    finally:
        await s.stop()
        if draining is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await draining  # its outcome is known already: here it only has to end
    if failure is not None and not isinstance(failure, Exception):
        raise failure
    async with OutboxReader(settings.outbox_path) as reader:  # the truth once shipping has stopped
        left = await reader.status()
    return DrainResult(s.stats, left.pending, left.dead, timed_out, failure)


async def _watch(s: Shipper, update: Callable[[int], None]) -> None:
    while True:
        update(s.stats.shipped + s.stats.dead)
        await asyncio.sleep(0.2)


@shipper.command(epilog=EXIT_CODES_HELP)
@_shipping_options
@_log_options("warning")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    metavar="SECONDS",
    help="Stop shipping after this long; exit 4 if events are still pending then. Default: wait.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def drain(log_level: str, log_format: str, timeout: float | None, as_json: bool, **options: Any) -> None:
    """Ship everything pending now, then exit; print how many events were shipped.

    For cron jobs, maintenance windows, or after `outbox import`. Fails at once (exit 4) if
    Postgres cannot be reached.

    \b
    Examples:
      shipper drain --outbox events.db --dsn postgresql://bot:secret@db/bot
      shipper drain --outbox events.db --timeout 300 --json
    """
    settings = _settings(options)
    for_shipping()
    with log_to_stderr(log_level, log_format):
        result = run(_drain(settings, timeout))
    stats = result.stats
    if as_json:
        echo_json(result.as_json())
    else:
        click.echo(f"shipped {counted(stats.shipped, 'event')} to {redact_dsn(settings.dsn)}")
        if stats.dead:
            click.echo(
                f"{counted(stats.dead, 'event')} refused by Postgres, kept as dead letters:"
                f" outbox dead list {settings.outbox_path}"
            )
    if result.failure is not None:
        raise result.failure
    if result.pending:
        when = f"timed out after {timeout:g} s" if result.timed_out else "stopped"
        raise ShipperError(
            f"drain {when}: {counted(result.pending, 'event')} still pending (they stay in the outbox;"
            " shipper drain or shipper run ships them)"
        )


# -- migrate -------------------------------------------------------------------------------------


@shipper.command(epilog=EXIT_CODES_HELP)
@dsn_option()
@schema_option
@click.option(
    "--lock-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    metavar="SECONDS",
    help="Give up if another migration holds its lock this long.",
)
@click.option(
    "--partition",
    type=click.Choice(PERIODS),
    help="Partition outbox_events and command_calls by created_at (primary key becomes (id, created_at)).",
)
@click.option(
    "--move-rows",
    is_flag=True,
    help="With --partition: move rows already in the tables into partitions (locks them while it copies).",
)
def migrate(dsn: str, schema: str, lock_timeout: float, partition: str | None, move_rows: bool) -> None:
    """Create or upgrade the Postgres tables the shipper writes (safe to run again).

    `shipper run` and `shipper drain` do this on first use too; run it yourself when the bot's
    database user may not create tables.

    With --partition, outbox_events and command_calls are partitioned by created_at; tables that
    already hold rows are refused unless --move-rows (docs/SCALING.md).

    \b
    Examples:
      shipper migrate --dsn postgresql://admin:secret@db/bot
      shipper migrate --dsn postgresql://admin:secret@db/bot --partition monthly
    """
    if move_rows and partition is None:
        raise click.UsageError("--move-rows goes with --partition monthly|weekly|daily")
    version = run(
        migrate_schema(dsn, schema=schema, lock_timeout_s=lock_timeout, partition=partition, move_rows=move_rows)
    )
    click.echo(f"outbox schema at version {version} in schema {schema} on {redact_dsn(dsn)}")


def main() -> None:
    """Run the ``shipper`` command line."""
    with log_to_stderr("warning"):
        shipper.main()


if __name__ == "__main__":
    main()
