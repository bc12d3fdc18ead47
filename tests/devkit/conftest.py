"""The emulator tests share one emulator per module, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from elevation.devkit.emulator import AwsEmulator


@pytest.fixture(scope="module")
def running() -> Iterator[AwsEmulator]:
    """One emulator for the whole module: starting moto's Flask apps costs more than a reset."""
    with AwsEmulator() as emulator:
        yield emulator


@pytest.fixture
def emu(running: AwsEmulator) -> AwsEmulator:
    running.reset()
    return running
