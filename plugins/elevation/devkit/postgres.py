"""A fresh, throw-away PostgreSQL database on a server that already runs (tests, `make test-distributed`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from datetime import UTC, datetime


@contextlib.contextmanager
def scratch_database(server_url: str, prefix: str) -> Iterator[str]:
    """Create an empty database named after `prefix`, the pid and the time on the server of `server_url` (any
    database URL there: the name is replaced), yield its URL, and drop it afterwards (its connections too)."""
    import sqlalchemy as sa

    name = f"elevation_{prefix}_{os.getpid()}_{datetime.now(UTC):%H%M%S%f}"
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        try:
            yield sa.engine.make_url(server_url).set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
