"""What the ``outbox`` and ``shipper`` command lines share: times, errors, progress, output.

The commands themselves (``outbox.cli``, ``shipper.outbox_cli``, ``shipper.cli``) only map options
onto calls; everything they have in common lives here so both tools behave the same way: one
line on stderr per error, documented exit codes, no traceback, never a password.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import click

from .maintenance import format_time
from .report import human_bytes
from .secrets import scrub_secrets

__all__ = [
    "EXIT_OK",
    "EXIT_FAILURE",
    "EXIT_USAGE",
    "EXIT_OUTBOX",
    "EXIT_POSTGRES",
    "EXIT_INTERRUPTED",
    "EXIT_CODES_HELP",
    "SHIPPER_EXIT_CODES_HELP",
    "CONTEXT_SETTINGS",
    "CliGroup",
    "TimeType",
    "DurationType",
    "parse_duration",
    "parse_time",
    "scrub_secrets",
    "one_line",
    "warn",
    "describe_error",
    "progress",
    "run",
    "path_argument",
    "FilePath",
    "FileProblem",
    "range_options",
    "dsn_option",
    "echo_json",
    "check_range",
    "format_time",
]

T = TypeVar("T")

EXIT_OK = 0
EXIT_FAILURE = 1  # verify found missing events; anything unexpected
EXIT_USAGE = 2  # a bad option, argument or time (click's own code)
EXIT_OUTBOX = 3  # the outbox or an input file: missing, not an outbox, damaged, a bad import line
EXIT_POSTGRES = 4  # Postgres: unreachable, malformed DSN, refused login, unusable schema
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = """\b
Exit codes:
  0    done
  1    verify found missing events, replay had events refused, or an unexpected failure
  2    usage: a bad option, argument or time, or an id that is not a dead letter
  3    the outbox or an input file: missing, a directory, not an outbox, damaged, a bad line
  4    Postgres: unreachable, malformed DSN, login refused, tables missing
  130  interrupted
"""

SHIPPER_EXIT_CODES_HELP = """\b
Exit codes:
  0    done (run: stopped by SIGTERM or SIGINT)
  1    the metrics port cannot be served, or an unexpected failure
  2    usage: a bad option, argument or duration
  3    the outbox: a directory, not an outbox, damaged
  4    Postgres: unreachable, malformed DSN, login refused, a statement refused;
       drain: events still pending when --timeout ran out
  130  interrupted
"""

CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


# -- times ---------------------------------------------------------------------------------------

_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+$", re.IGNORECASE)
_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_LONGEST_S = 1000 * 366 * 86400
_TIME_HINT = "use ISO 8601 such as 2024-05-01T12:00:00Z, or an age such as 15m, 2h, 7d"


def parse_duration(text: str) -> float:
    """Return the seconds in a duration such as ``90s``, ``15m``, ``2h``, ``7d``, ``1w`` or ``1h30m``."""
    cleaned = text.strip()
    if not _DURATION.match(cleaned):
        if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
            raise ValueError(f"{text!r} needs a unit: s, m, h, d or w (e.g. {cleaned}m)")
        raise ValueError(f"{text!r} is not a duration such as 15m, 2h or 7d")
    seconds = sum(float(n) * _UNIT_S[unit.lower()] for n, unit in _PART.findall(cleaned))
    if seconds > _LONGEST_S:  # past any date a clock or SQLite's 64-bit integers can hold
        raise ValueError(f"{text!r} is longer than anything an outbox could hold (at most 1000 years)")
    return seconds


def parse_time(text: str, *, now_us: int | None = None) -> int:
    """Return microseconds since the epoch for an ISO 8601 time or an age (``2h`` = two hours ago).

    A time without a zone is taken as UTC, like the times ``outbox export`` writes; ``now`` is
    accepted too.
    """
    now = time.time_ns() // 1000 if now_us is None else now_us
    cleaned = text.strip()
    if cleaned.lower().endswith(" ago"):
        cleaned = cleaned[:-4].strip()
    if not cleaned:
        raise ValueError(f"an empty time: {_TIME_HINT}")
    if cleaned.lower() == "now":
        return now
    if _DURATION.match(cleaned):
        return now - int(parse_duration(cleaned) * 1_000_000)
    if re.fullmatch(r"\d+(?:\.\d+)?", cleaned):
        raise ValueError(f"{text!r} needs a unit: s, m, h, d or w (e.g. {cleaned}d), or give an ISO 8601 time")
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ValueError(f"{text!r} is not a time: {_TIME_HINT}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return int(moment.timestamp() * 1_000_000)


class DurationType(click.ParamType):  # type: ignore[type-arg]
    """A click parameter holding a length of time such as ``7d``, as seconds."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            return float(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class TimeType(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.2 on
    """A click parameter holding a moment, as microseconds since the epoch."""

    name = "TIME"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_time(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


# -- errors --------------------------------------------------------------------------------------


def one_line(text: str) -> str:
    """Fold a message onto one line."""
    return re.sub(r"\s*\n\s*", "; ", text.strip())


def warn(message: str) -> None:
    """Print ``outbox: warning: MESSAGE`` (the running tool's name) as one line on stderr: for
    what a command passed over and went on, before the one error line that says it did."""
    ctx = click.get_current_context(silent=True)
    name = ctx.find_root().command.name if ctx is not None else None
    click.echo(f"{name or 'outbox'}: warning: {scrub_secrets(one_line(message))}", err=True)


def describe_error(exc: BaseException) -> str:
    """Return what went wrong, without the exception's type (``path: No such file or directory``)."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


class _Interrupted(Exception):
    """Ctrl-C while a command ran (click would print a blank line for a KeyboardInterrupt)."""


class CliGroup(click.Group):
    """A click group whose ``main`` turns every error into one line on stderr and an exit code.

    ``register_error(SomeError, code)`` maps an exception family onto an exit code; the most
    specific registered class wins. Anything unregistered is reported as unexpected (exit 1),
    still on one line and without a traceback.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.error_codes: dict[type[BaseException], tuple[int, Callable[[BaseException], str]]] = {}

    def register_error(
        self, family: type[BaseException], code: int, describe: Callable[[BaseException], str] | None = None
    ) -> None:
        """Report exceptions of ``family`` as ``describe(exc)`` (default: the message) with ``code``."""
        self.error_codes[family] = (code, describe or describe_error)

    def translate(self, exc: BaseException) -> tuple[int, str]:
        """Return the exit code and the one-line message for ``exc``."""
        matches = [(len(family.__mro__), entry) for family, entry in self.error_codes.items() if isinstance(exc, family)]
        if not matches:
            return EXIT_FAILURE, f"unexpected {type(exc).__name__}: {describe_error(exc)}"
        code, describe = max(matches, key=lambda match: match[0])[1]
        return code, describe(exc)

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; Ctrl-C becomes :class:`_Interrupted`, so click prints no blank line."""
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise _Interrupted() from None

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; exit (or, with ``standalone_mode=False``, return) its code."""
        code = self._run(args, prog_name, complete_var, windows_expand_args, extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _run(
        self,
        args: Sequence[str] | None,
        prog_name: str | None,
        complete_var: str | None,
        windows_expand_args: bool,
        extra: dict[str, Any],
    ) -> int:
        name = self.name or "outbox"
        try:
            rv = super().main(
                args, prog_name, complete_var, standalone_mode=False, windows_expand_args=windows_expand_args, **extra
            )
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else "", err=True)
            return EXIT_USAGE
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
            self._fail(f"{one_line(exc.format_message())}{hint}")
            return exc.exit_code
        except click.ClickException as exc:
            self._fail(one_line(exc.format_message()))
            return exc.exit_code
        except (click.Abort, _Interrupted, KeyboardInterrupt):
            self._fail("interrupted")
            return EXIT_INTERRUPTED
        except Exception as exc:  # the one place where errors become messages
            code, message = self.translate(exc)
            self._fail(one_line(message))
            return code
        if isinstance(rv, int) and not isinstance(rv, bool):
            return rv
        return EXIT_OK

    def _fail(self, message: str) -> None:
        click.echo(f"{self.name or 'outbox'}: error: {scrub_secrets(message)}", err=True)


# -- running and progress ------------------------------------------------------------------------


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine to completion, as ``asyncio.run`` does, with nothing printed
    under the CLI's one line however a Ctrl-C falls.

    The event loop is made with SIGINT held back: a Ctrl-C landing inside its constructor left
    it half built, and its ``__del__`` printed "Exception ignored" and a traceback (CI saw it in
    ``outbox export``). The signal then arrives once the loop is whole, and the loop is closed.
    The coroutine is closed whatever happens: one interrupted before it starts would otherwise
    be "never awaited", which Python warns about.
    """
    try:
        runner = asyncio.Runner()
        try:
            _make_loop(runner)
            return runner.run(coro)
        finally:
            runner.close()
    finally:
        coro.close()  # a no-op once it has run


def _make_loop(runner: asyncio.Runner) -> None:
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
        runner.get_loop()  # no SIGINT to hold back here
        return
    held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        runner.get_loop()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, held)  # a Ctrl-C held back lands now


@contextmanager
def progress(
    label: str, length: int | None, *, deltas: bool = False, sizes: bool = False
) -> Iterator[Callable[[int], None]]:
    """Yield ``update(done_so_far)``: a bar on stderr when it is a terminal, otherwise nothing.

    With ``deltas``, ``update(n)`` means n more are done. With ``sizes``, the counts are bytes
    and shown as sizes (``17.3 MiB of 35.4 MiB``), not as raw numbers. Scripts reading stdout
    or stderr never see bar characters.
    """
    stream = sys.stderr
    if not length or not stream.isatty():
        yield lambda done: None
        return
    total = length

    def show(done: int | None) -> str:
        return f"{human_bytes(done or 0)} of {human_bytes(total)}"

    with click.progressbar(
        length=length,
        label=label,
        file=stream,
        show_pos=not sizes,
        show_eta=True,
        item_show_func=show if sizes else None,
    ) as bar:
        shown = 0

        def update(done: int) -> None:
            nonlocal shown
            step = min(shown + done if deltas else done, total) - shown
            if step > 0:
                shown += step
                bar.update(step, current_item=shown)

        yield update


# -- shared options ------------------------------------------------------------------------------

class FileProblem(click.ClickException):
    """A path given for a file names something that is not one (exit 3, like a missing outbox)."""

    exit_code = EXIT_OUTBOX


class FilePath(click.Path):
    """A file argument (``-`` allowed where ``allow_dash``), as a :class:`~pathlib.Path` or ``-``.

    One rule for every command: a directory where a file belongs is a problem with the file
    (exit 3, like a missing or damaged one), not a usage error. A missing file is left to the
    command, which knows whether it creates one.
    """

    def __init__(self, *, allow_dash: bool = False) -> None:
        super().__init__(allow_dash=allow_dash, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        shown = os.fsdecode(path)
        if shown != "-" and os.path.isdir(shown):
            raise FileProblem(f"{shown} is a directory, not a file")
        return path


path_argument = click.argument("path", envvar="OUTBOX_PATH", type=FilePath(), metavar="PATH")


def dsn_option(*, required: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add ``--dsn``, read from OUTBOX_DSN or else DATABASE_URL; never shown unredacted."""
    return click.option(
        "--dsn",
        envvar=["OUTBOX_DSN", "DATABASE_URL"],
        show_envvar=True,
        required=required,
        metavar="DSN",
        help="Postgres to use, e.g. postgresql://user:password@host:5432/db (shown only redacted).",
    )


def range_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--since``, ``--until`` and ``--topic`` (the selection export and replay share)."""
    func = click.option("--topic", metavar="TOPIC", help="Only events of this topic.")(func)
    func = click.option(
        "--until", type=TimeType(), help="Only events created before TIME (ISO 8601, or an age: 15m, 2h, 7d)."
    )(func)
    return click.option(
        "--since", type=TimeType(), help="Only events created at or after TIME (ISO 8601, or an age: 15m, 2h, 7d)."
    )(func)


def check_range(since_us: int | None, until_us: int | None) -> None:
    """Refuse an empty time range before doing any work."""
    if since_us is not None and until_us is not None and since_us >= until_us:
        raise click.BadParameter(
            f"--since ({format_time(since_us)}) is not before --until ({format_time(until_us)})",
            param_hint="'--since'",
        )


# -- output --------------------------------------------------------------------------------------


def echo_json(value: Any) -> None:
    """Print ``value`` as indented JSON on stdout (the stable form scripts read)."""
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))
