"""``python -m bot``: run the ladder bot on Discord, simulate it offline, or demo the whole path.

The commands only map options and environment variables onto config objects; the work lives in
:mod:`bot.runner`, :mod:`bot.simulate` and :mod:`bot.demo`. The conventions are those of the
``outbox`` and ``shipper`` tools (docs/CLI.md): one line on stderr, ``bot: error: ...``, never a
traceback or a password, and the same exit codes (2 usage, 3 outbox, 4 Postgres, 130 interrupted).
"""

from __future__ import annotations

import logging
from pathlib import Path

import click

from outbox import OutboxError
from outbox.clitools import EXIT_OUTBOX, EXIT_POSTGRES, CliGroup, FilePath
from outbox.clitools import run as run_coroutine
from shipper.outbox_cli import register_postgres_errors

__all__ = ["main"]

EXIT_CODES_HELP = """\b
Exit codes:
  0    done
  1    Discord refused or could not be reached, a simulated command failed, or an unexpected failure
  2    usage: a bad option or argument, DISCORD_TOKEN not set
  3    the outbox: a directory, not an outbox, damaged
  4    Postgres: unreachable, malformed DSN, login refused
  130  interrupted
"""

_LEVELS = click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False)


class _QuietVoice(logging.Filter):
    """Drop discord.py's start-up warnings about voice libraries a text bot never needs."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "voice will NOT be supported" not in record.getMessage()


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    logging.getLogger("discord.client").addFilter(_QuietVoice())


class _OutboxFailed(click.ClickException):
    exit_code = EXIT_OUTBOX


class _PostgresFailed(click.ClickException):
    exit_code = EXIT_POSTGRES


def _run_failure(message: str) -> click.ClickException:
    """The runner's errors are one family: give each its kind's exit code (1 for Discord)."""
    if message.startswith("cannot open the outbox"):
        return _OutboxFailed(message)
    if message.startswith("cannot ship to Postgres"):
        return _PostgresFailed(message)
    return click.ClickException(message)


@click.group(
    name="bot", cls=CliGroup, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EXIT_CODES_HELP
)
@click.version_option(package_name="discord-outbox", message="bot %(version)s")
def main() -> None:
    """The ladder bot: every slash command it runs is logged to the outbox.

    \b
    python -m bot run          connect to Discord (token from DISCORD_TOKEN)
    python -m bot simulate     real discord.py dispatch of N commands, no network
    python -m bot demo         simulate on an embedded Postgres and report
    """


@main.command(epilog=EXIT_CODES_HELP)
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
    type=FilePath(),
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
        raise click.UsageError(
            "DISCORD_TOKEN is not set: export the bot's token (Discord developer portal > your app > Bot > Token)"
        )
    _setup_logging(log_level)
    config = RunConfig(token=token.strip(), outbox_path=outbox_path, dsn=dsn or None, sync=sync)
    try:
        run_coroutine(run_bot(config))
    except RunError as exc:
        raise _run_failure(str(exc)) from None
    except KeyboardInterrupt:
        raise SystemExit(130) from None


@main.command(epilog=EXIT_CODES_HELP)
@click.option("--commands", "-n", type=click.IntRange(min=1), default=1000, show_default=True, help="Commands to log.")
@click.option(
    "--outbox",
    "outbox_path",
    required=True,
    type=FilePath(),
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
        result = run_coroutine(run_simulation(config))
    except SimulationError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("\n".join(format_report(result)))


@main.command(epilog=EXIT_CODES_HELP)
@click.option("--commands", "-n", type=click.IntRange(min=1), default=5000, show_default=True, help="Commands to log.")
@click.option("--keep", is_flag=True, help="Keep the temporary directory (the outbox file) and print where it is.")
@click.option("--log-level", type=_LEVELS, default="WARNING", show_default=True)
def demo(commands: int, keep: bool, log_level: str) -> None:
    """Start an embedded Postgres, simulate the bot with the shipper in-process, and report."""
    from .demo import DemoConfig, DemoError, run_demo
    from .simulate import SimulationError

    _setup_logging(log_level)
    click.echo(f"starting an embedded Postgres and simulating {commands} logged commands ...", err=True)
    try:
        lines = run_demo(DemoConfig(commands=commands, keep=keep))
    except (DemoError, SimulationError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo("\n".join(lines))


assert isinstance(main, CliGroup)
main.register_error(OutboxError, EXIT_OUTBOX)
main.register_error(OSError, EXIT_OUTBOX)
register_postgres_errors(main)
