"""Prints the simulated days' summary at the end of the session (examples run, invariant violations by kind)."""

from __future__ import annotations

import pytest

from .soak import summary_lines


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = summary_lines()
    if lines:
        terminalreporter.section("simulated days")
        for line in lines:
            terminalreporter.write_line(line)
