"""The ``outbox`` console script: the local commands of ``outbox.cli`` plus replay and verify.

``replay`` and ``verify`` talk to Postgres, so they live on this side of the one-way dependency
(``shipper`` -> ``outbox``) and are added to the group defined in :mod:`outbox.cli`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import click

from outbox import Event, OutboxReader, OutboxTextError
from outbox.cli import outbox as cli
from outbox.clilog import log_to_stderr
from outbox.clitools import (
    EXIT_CODES_HELP,
    EXIT_POSTGRES,
    CliGroup,
    check_range,
    dsn_option,
    echo_json,
    path_argument,
    progress,
    range_options,
    run,
    warn,
)
from outbox.report import counted

from .dsn import redact_dsn
from .errors import ShipperError
from .routes import parse_routes
from .replay import ReplayResult, VerifyResult
from .replay import replay as replay_events
from .replay import verify as verify_events

__all__ = ["cli", "main", "register_postgres_errors", "route_option", "schema_option"]


def _routes(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> dict[str, str]:
    try:
        return parse_routes(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def route_option() -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--route TOPIC=TABLE`` (repeatable; OUTBOX_ROUTES holds ``a=b,c=d``) as a dict."""
    return click.option(
        "--route",
        "routes",
        multiple=True,
        envvar="OUTBOX_ROUTES",
        show_envvar=True,
        callback=_routes,
        metavar="TOPIC=TABLE",
        help="Events of TOPIC go to your own TABLE (needs an `id uuid` key; payload keys fill its columns). Repeatable.",
    )


def schema_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--schema`` (OUTBOX_SCHEMA): the Postgres schema of the shipper's tables."""
    return click.option(
        "--schema",
        envvar="OUTBOX_SCHEMA",
        show_envvar=True,
        default="public",
        show_default=True,
        metavar="NAME",
        help="Postgres schema holding the shipper's tables (every statement names it).",
    )(func)


def _describe_postgres(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if isinstance(exc, asyncpg.UndefinedTableError):
        return f"Postgres: {text} (has `shipper migrate --dsn DSN` been run on this database?)"
    if isinstance(exc, asyncpg.PostgresError):
        return f"Postgres refused: {text}"
    return f"lost the connection to Postgres: {text}"


def register_postgres_errors(group: CliGroup) -> None:
    """Report shipper and Postgres errors as such, with exit code 4."""
    group.register_error(ShipperError, EXIT_POSTGRES)
    group.register_error(ConnectionError, EXIT_POSTGRES, _describe_postgres)
    group.register_error(asyncpg.PostgresError, EXIT_POSTGRES, _describe_postgres)
    group.register_error(asyncpg.InterfaceError, EXIT_POSTGRES, _describe_postgres)


assert isinstance(cli, CliGroup)
register_postgres_errors(cli)


# -- replay --------------------------------------------------------------------------------------


async def _replay(
    path: Path, dsn: str | None, since: int | None, until: int | None, topic: str | None, dry_run: bool,
    routes: dict[str, str], schema: str = "public",
) -> tuple[ReplayResult, int]:
    """Replay; return the result and how many dead letters in the range were left out."""
    async with OutboxReader(path) as reader:
        total = await reader.count_events(since_us=since, until_us=until, topic=topic)
        with progress("selecting" if dry_run else "replaying", total, deltas=True) as step:
            result = await replay_events(
                reader, dsn, since_us=since, until_us=until, topic=topic, dry_run=dry_run, progress=step, routes=routes,
                schema=schema, unreadable=_named("would not send" if dry_run else "not replayed"),
            )
        return result, max(0, total - result.selected - result.unreadable)


def _named(what: str) -> Callable[[Event, str], None]:
    """A warning line for each event whose text is not valid UTF-8, as the command passes it."""
    return lambda event, why: warn(f"{what} seq {event.seq} (id {event.id}): {why}".lstrip())


@cli.command(epilog=EXIT_CODES_HELP)
@path_argument
@dsn_option(required=False)
@schema_option
@range_options
@click.option("--dry-run", is_flag=True, help="Say what would be sent; connect to nothing.")
@route_option()
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def replay(
    path: Path,
    dsn: str | None,
    since: int | None,
    until: int | None,
    topic: str | None,
    dry_run: bool,
    routes: dict[str, str],
    as_json: bool,
    schema: str,
) -> None:
    """Send a range of events to Postgres again, shipped ones too.

    For a Postgres restored to an earlier point: the events shipped since that point are still
    in the outbox (until pruned) and are sent again. Ids already in Postgres are skipped, so a
    replay can be repeated safely. Run `outbox verify` first to see what is missing. An event
    whose text is not valid UTF-8 (a damaged file) cannot be sent: each is named on stderr, the
    rest are sent, and the exit code is 3.

    \b
    Examples:
      outbox replay events.db --dsn postgresql://bot@db/bot --since 2024-05-01T09:00:00Z
      outbox replay events.db --since 6h --topic command_calls --dry-run
    """
    check_range(since, until)
    if dsn is None and not dry_run:
        raise click.UsageError("Missing option '--dsn' (or set OUTBOX_DSN or DATABASE_URL)")
    result, left_out = run(_replay(path, dsn, since, until, topic, dry_run, routes, schema))
    where = redact_dsn(dsn) if dsn else "Postgres"
    already = result.selected - result.inserted - result.rejected
    if as_json:
        echo_json(
            {
                "selected": result.selected,
                "sent": None if dry_run else result.inserted,
                "inserted": None if dry_run else result.inserted,
                "already_present": None if dry_run else already,  # unknown without asking Postgres
                "refused": None if dry_run else result.rejected,
                "dead_letters_left_out": left_out,
                "unreadable": result.unreadable,
                "by_topic": result.by_topic,
                "dry_run": dry_run,
            }
        )
    elif dry_run:
        click.echo(f"would send {counted(result.selected, 'event')} to {where} (dry run: nothing sent)")
        for name, count in sorted(result.by_topic.items()):
            click.echo(f"  {name}  {count}")
    else:
        click.echo(
            f"replayed {counted(result.selected, 'event')} to {where}: {result.inserted:,} restored,"
            f" {already:,} already there, {result.rejected:,} refused"
        )
    if left_out and not as_json:
        click.echo(
            f"{counted(left_out, 'dead letter')} left out (a replay never sends them;"
            f" outbox dead retry {path} marks them for the shipper)"
        )
    if result.rejected:
        raise click.ClickException(
            f"Postgres refused {result.rejected:,} of the replayed events"
            f" (they are not set aside by a replay; fix the cause and replay again)"
        )
    if result.unreadable:
        raise OutboxTextError(
            f"{counted(result.unreadable, 'event')} not {'sendable' if dry_run else 'replayed'}:"
            f" {'its' if result.unreadable == 1 else 'their'} text is not valid UTF-8"
        )


# -- verify --------------------------------------------------------------------------------------


async def _verify(path: Path, dsn: str, routes: dict[str, str], schema: str = "public") -> VerifyResult:
    async with OutboxReader(path) as reader:
        total = (await reader.status()).shipped
        with progress("verifying", total, deltas=True) as step:
            return await verify_events(
                reader, dsn, progress=step, routes=routes, schema=schema, unreadable=_named("")
            )


@cli.command(epilog=EXIT_CODES_HELP)
@path_argument
@dsn_option()
@route_option()
@schema_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (missing ids included).")
def verify(path: Path, dsn: str, routes: dict[str, str], as_json: bool, schema: str) -> None:
    """Prove that every shipped event still in the outbox is in Postgres.

    Checks in chunks, so any size of outbox works. Prints how many are missing per topic and
    exits 1 when any is; `outbox replay` then sends them again. A shipped event whose text went
    bad on disk (not valid UTF-8) is named on stderr; it is still checked by its id, unless its
    id or topic is what went bad (exit 3).

    \b
    Examples:
      outbox verify events.db --dsn postgresql://bot@db/bot
      OUTBOX_DSN=postgresql://bot@db/bot outbox verify events.db --json
    """
    result = run(_verify(path, dsn, routes, schema))
    missing = sum(result.missing.values())
    where = redact_dsn(dsn)
    if as_json:
        echo_json(
            {
                "checked": result.checked,
                "missing": result.missing,
                "missing_total": missing,
                "missing_ids": result.missing_ids,
                "unchecked": result.unchecked,
                "ok": not missing and not result.unchecked,
            }
        )
    elif not missing:
        click.echo(f"checked {counted(result.checked, 'shipped event')} against {where}: all present")
    else:
        click.echo(f"checked {counted(result.checked, 'shipped event')} against {where}: {missing:,} missing")
        for name, count in sorted(result.missing.items()):
            click.echo(f"  {name}  {count} missing")
        click.echo("first missing ids: " + " ".join(result.missing_ids[:10]))
    if missing:
        raise click.ClickException(
            f"{counted(missing, 'shipped event')} {'is' if missing == 1 else 'are'} missing from Postgres;"
            f" `outbox replay {path} --dsn DSN` (the same DSN) sends them again"
        )
    if result.unchecked:
        raise OutboxTextError(
            f"{counted(result.unchecked, 'shipped event')} could not be checked:"
            f" {'its' if result.unchecked == 1 else 'their'} id or topic is not valid UTF-8"
        )


def main() -> None:
    """Run the ``outbox`` command line."""
    with log_to_stderr("warning"):
        cli.main()


if __name__ == "__main__":
    main()
