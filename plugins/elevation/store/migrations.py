"""Apply the versioned migrations in `sql/migrations` to a database, in place."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.engine import Engine

from elevation.resources import data_path

VERSION_TABLE = "elevation_schema_version"


def _config(connection: object) -> Config:
    config = Config()
    config.set_main_option("script_location", str(data_path("sql") / "migrations"))
    config.attributes["connection"] = connection
    return config


def upgrade(engine: Engine, revision: str = "head") -> None:
    with engine.begin() as connection:
        command.upgrade(_config(connection), revision)


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(
            connection, opts={"version_table": VERSION_TABLE}
        ).get_current_revision()
