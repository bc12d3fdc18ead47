"""Alembic environment for the elevation schema: runs on the connection the caller hands over.

Used by `elevation db upgrade` and by every DAG before it touches the queue; the version table is
`elevation_schema_version`, so the schema can share a database with other applications (even Airflow's own).
"""

from alembic import context

VERSION_TABLE = "elevation_schema_version"

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run the elevation migrations through elevation.store.migrations.upgrade()")

context.configure(connection=connection, version_table=VERSION_TABLE, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
