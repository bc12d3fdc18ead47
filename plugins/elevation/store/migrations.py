"""Apply the versioned migrations in `sql/migrations` to a database, in place.

Every task calls :func:`upgrade` before it touches the queue, so a database that is already up to date costs one
query and does not load Alembic at all (whose import alone logs INFO lines into every task log); Alembic runs only
when the database is behind.
"""

from __future__ import annotations

import ast
import contextlib
import functools
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from elevation.resources import data_path

if TYPE_CHECKING:
    from alembic.config import Config

VERSION_TABLE = "elevation_schema_version"
#: PostgreSQL advisory lock held while migrating (any constant unlikely to clash: "elevmigr" in ASCII).
ADVISORY_LOCK_KEY = 0x656C65766D696772

log = logging.getLogger(__name__)
_in_process = threading.Lock()  # also guards the Alembic logger level we raise while Alembic works


def _scripts() -> Path:
    return data_path("sql") / "migrations"


def _config(connection: object) -> Config:
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_scripts()))
    config.attributes["connection"] = connection
    return config


@functools.cache
def head_revision() -> str:
    """The latest revision of the migration scripts, read once per process from their `revision` and
    `down_revision` lines (Alembic's own reading would cost its import on every task)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in sorted((_scripts() / "versions").glob("*.py")):
        for name, value in _revision_lines(path):
            if name == "revision":
                revisions.add(value)
            elif value is not None:
                parents.update(value if isinstance(value, tuple | list) else (value,))
    heads = revisions - parents
    if len(heads) != 1:
        raise RuntimeError(f"the migration scripts in {_scripts()} have heads {sorted(heads)}; expected one")
    return heads.pop()


def _revision_lines(path: Path) -> Iterator[tuple[str, Any]]:
    """The module-level `revision = ...` and `down_revision = ...` literals of a migration script."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            target, value = node.target, node.value
        else:
            continue
        if isinstance(target, ast.Name) and target.id in ("revision", "down_revision"):
            yield target.id, ast.literal_eval(value)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema to `revision` (default: the latest), running Alembic only when the database is behind.

    Concurrent upgrades (several tasks starting after a deploy) are serialised by the database, an advisory lock on
    PostgreSQL and BEGIN IMMEDIATE on SQLite, and the revision is read again once the lock is held, so only the
    first one migrates."""
    target = head_revision() if revision == "head" else revision
    if _stored_revision(engine) == target:
        return
    with _quiet_alembic(), engine.begin() as connection:
        from alembic import command

        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": ADVISORY_LOCK_KEY})
        before = _revision_of(connection)
        if before == target:
            return
        command.upgrade(_config(connection), revision)
    log.info("elevation schema upgraded from %s to %s", before or "an empty database", target)


def current_revision(engine: Engine) -> str | None:
    with _quiet_alembic(), engine.connect() as connection:
        return _revision_of(connection)


def _revision_of(connection: sa.Connection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE}).get_current_revision()


def _stored_revision(engine: Engine) -> str | None:
    """The revision in the version table, in one query; None when there is no table yet (a new database)."""
    with engine.connect() as connection:
        try:
            return connection.execute(
                sa.select(sa.column("version_num")).select_from(sa.table(VERSION_TABLE))
            ).scalar()
        except sa.exc.DBAPIError:
            return None  # no version table: the locked path creates the schema (or reports the real error)


@contextlib.contextmanager
def _quiet_alembic() -> Iterator[None]:
    """Alembic's INFO lines (plugin setup at import, one per step) would bury the one line :func:`upgrade` logs."""
    logger = logging.getLogger("alembic")
    with _in_process:
        level = logger.level
        logger.setLevel(max(level, logging.WARNING))
        try:
            yield
        finally:
            logger.setLevel(level)
