"""Fresh queues for simulated days (SQLite copied from a migrated template, PostgreSQL created from one), and the
days' summary at the end of the session (examples run, invariant violations by kind)."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa

from elevation.store.database import create_engine_for_url
from elevation.store.migrations import upgrade

from .databases import Databases
from .soak import summary_lines

POSTGRES_ENV = "ELEVATION_TEST_POSTGRES_URL"


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = summary_lines()
    if lines:
        terminalreporter.section("simulated days")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Where the SQLite queues live: memory when the machine has it (fsyncs would be most of a day's time)."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        path = Path(tempfile.mkdtemp(prefix="elevation-sim-", dir=shm))
        yield path
        shutil.rmtree(path, ignore_errors=True)
    else:
        yield tmp_path_factory.mktemp("simulation")


@pytest.fixture(scope="session")
def sqlite_template(workdir: Path) -> Path:
    """A migrated SQLite queue, copied for each day (migrating costs more than a day's first hour)."""
    path = workdir / "template.db"
    engine = create_engine_for_url(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[tuple[sa.Engine, str]]:
    """A migrated PostgreSQL database that each day's database is created from (CREATE DATABASE ... TEMPLATE)."""
    base = os.environ.get(POSTGRES_ENV)
    if not base:
        pytest.skip(f"{POSTGRES_ENV} is not set: the PostgreSQL days need a server")
    admin = sa.create_engine(base, isolation_level="AUTOCOMMIT")
    name = f"elevation_sim_{os.getpid()}_{datetime.now(UTC):%H%M%S%f}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    template_url = sa.engine.make_url(base).set(database=name).render_as_string(hide_password=False)
    engine = create_engine_for_url(template_url)
    upgrade(engine)
    engine.dispose()
    yield admin, name
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def databases(request: pytest.FixtureRequest, workdir: Path) -> Iterator[Databases]:
    """Fresh SQLite queues for a test (removed afterwards)."""
    made = Databases(request, "sqlite", workdir)
    yield made
    made.remove_all()
