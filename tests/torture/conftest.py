"""Torture fixtures: a tally per scenario, printed together at the end of the run.

``OUTBOX_TORTURE_REPORT=path`` also appends each scenario's figures to ``path`` as JSON lines.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from torture_kit import Tally  # noqa: E402

_TALLIES = pytest.StashKey[list[Tally]]()


@pytest.fixture
def tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    """The figures this scenario counts (fill them with ``await tally.settle(...)``)."""
    record = Tally(scenario=request.node.name.removeprefix("test_"))
    yield record
    if record.settled:
        request.config.stash.setdefault(_TALLIES, []).append(record)
        target = os.environ.get("OUTBOX_TORTURE_REPORT")
        if target:
            with open(target, "a", encoding="utf-8") as out:
                out.write(json.dumps(record.as_json()) + "\n")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config) -> None:
    tallies = config.stash.get(_TALLIES, [])
    if not tallies:
        return
    terminalreporter.write_sep("=", "torture: what was counted")
    for record in tallies:
        terminalreporter.write_line(record.line())
