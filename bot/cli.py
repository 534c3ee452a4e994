"""``python -m bot``: run the ladder bot on Discord, simulate it offline, or demo the whole path.

The commands only map options and environment variables onto config objects; the work lives in
:mod:`bot.runner`, :mod:`bot.simulate` and :mod:`bot.demo`. Errors are one line on stderr.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import click

from outbox import OutboxError

__all__ = ["main"]

_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)


class _QuietVoice(logging.Filter):
    """Drop discord.py's start-up warnings about voice libraries a text bot never needs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in record.getMessage()


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("discord.client").addFilter(_QuietVoice())


def _redact(dsn: str, text: str) -> str:
    from shipper.dsn import redact_dsn

    return text.replace(dsn, redact_dsn(dsn))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The ladder bot: every slash command it runs is logged to the outbox.

    \b
    python -m bot run          connect to Discord (token from DISCORD_TOKEN)
    python -m bot simulate     real discord.py dispatch of N commands, no network
    python -m bot demo         simulate on an embedded Postgres and report
    """


@main.command()
@click.option(
    "--token",
    envvar="DISCORD_TOKEN",
    show_envvar=True,
    help="The bot's token. Prefer the environment variable: a command-line token shows in `ps`.",
)
@click.option(
    "--outbox",
    "outbox_path",
    envvar="OUTBOX_PATH",
    show_envvar=True,
    default="events.db",
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The outbox file commands are logged to.",
)
@click.option(
    "--dsn",
    envvar=["OUTBOX_DSN", "DATABASE_URL"],
    show_envvar=True,
    help="Postgres to ship to from this process. Unset: leave shipping to a `shipper run` sidecar.",
)
@click.option("--sync/--no-sync", default=False, show_default=True, help="Push command definitions to Discord.")
@click.option("--log-level", type=_LEVELS, default="INFO", show_default=True)
def run(token: str | None, outbox_path: Path, dsn: str | None, sync: bool, log_level: str) -> None:
    """Connect to Discord and serve the ladder's slash commands until SIGINT/SIGTERM.

    Env: DISCORD_TOKEN (required), OUTBOX_PATH, OUTBOX_DSN (falls back to DATABASE_URL).
    """
    from .runner import RunConfig, RunError, run_bot

    if not token or not token.strip():
        raise click.ClickException(
            "DISCORD_TOKEN is not set: export the bot's token (Discord developer portal > your app > Bot > Token)"
        )
    _setup_logging(log_level)
    config = RunConfig(token=token.strip(), outbox_path=outbox_path, dsn=dsn or None, sync=sync)
    try:
        asyncio.run(run_bot(config))
    except RunError as exc:
        message = str(exc)
        raise click.ClickException(_redact(dsn, message) if dsn else message) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


@main.command()
@click.option("--commands", "-n", type=click.IntRange(min=1), default=1000, show_default=True, help="Commands to log.")
@click.option(
    "--outbox",
    "outbox_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The outbox file the simulated commands are logged to (keep it apart from a real bot's).",
)
@click.option("--dsn", help="Also ship to this Postgres with an in-process shipper and count the rows there.")
@click.option("--baseline/--no-baseline", default=True, show_default=True, help="Also run with logging off.")
@click.option("--block", type=click.IntRange(min=1), default=50, show_default=True, help="Commands per block.")
@click.option("--warmup", type=click.IntRange(min=0), default=100, show_default=True, help="Unmeasured commands.")
@click.option("--seed", type=int, default=1, show_default=True, help="Traffic seed.")
@click.option("--log-level", type=_LEVELS, default="WARNING", show_default=True)
def simulate(
    commands: int,
    outbox_path: Path,
    dsn: str | None,
    baseline: bool,
    block: int,
    warmup: int,
    seed: int,
    log_level: str,
) -> None:
    """Drive N slash commands through discord.py's real dispatch, with no network.

    Discord's HTTP API is stood in for by a local server; latencies are printed with the
    command log attached and detached (alternating blocks), then the rows that landed.
    """
    from .simulate import SimulationConfig, SimulationError, format_report
    from .simulate import simulate as run_simulation

    _setup_logging(log_level)
    config = SimulationConfig(
        commands=commands, outbox_path=outbox_path, dsn=dsn, baseline=baseline, block=block, warmup=warmup, seed=seed
    )
    try:
        result = asyncio.run(run_simulation(config))
    except (SimulationError, OutboxError) as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        _fail_shipping(exc, dsn)
        raise
    click.echo("\n".join(format_report(result)))


@main.command()
@click.option("--commands", "-n", type=click.IntRange(min=1), default=5000, show_default=True, help="Commands to log.")
@click.option("--keep", is_flag=True, help="Keep the temporary directory (the outbox file).")
@click.option("--log-level", type=_LEVELS, default="WARNING", show_default=True)
def demo(commands: int, keep: bool, log_level: str) -> None:
    """Start an embedded Postgres, simulate the bot with the shipper in-process, and report."""
    from .demo import DemoConfig, DemoError, run_demo
    from .simulate import SimulationError

    _setup_logging(log_level)
    click.echo(f"starting an embedded Postgres and simulating {commands} logged commands ...", err=True)
    try:
        lines = run_demo(DemoConfig(commands=commands, keep=keep))
    except (DemoError, SimulationError, OutboxError) as exc:
        raise click.ClickException(str(exc)) from None
    except Exception as exc:
        _fail_shipping(exc, None)
        raise
    click.echo("\n".join(lines))


def _fail_shipping(exc: Exception, dsn: str | None) -> None:
    """Turn a shipper error into one clear line (DSN redacted); leave anything else alone."""
    from shipper import ShipperError

    if isinstance(exc, ShipperError):
        message = str(exc)
        raise click.ClickException(_redact(dsn, message) if dsn else message) from None
