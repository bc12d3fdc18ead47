"""Engines for the queue database: SQLite (embedded default) or PostgreSQL (production).

Times are stored in UTC. Rows written by outside systems may carry times Python cannot hold (PostgreSQL's
`infinity`, year 10000, BC dates) or, on SQLite, text in any format, so reading is lenient on both dialects: a
value that cannot be read comes back as :class:`UnreadableTime` and that one request is rejected with a reason,
instead of one row breaking every batch it is fetched in.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine


@dataclass(frozen=True)
class UnreadableTime:
    raw: str

    def __str__(self) -> str:
        return self.raw


def as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def parse_time(value: Any) -> datetime | UnreadableTime | None:
    if value is None or isinstance(value, datetime):
        return None if value is None else as_utc(value)
    text = str(value).strip()
    try:
        return as_utc(datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return UnreadableTime(text)


class UtcDateTime(sa.types.TypeDecorator):
    """Aware UTC datetimes in, aware UTC datetimes out, on both dialects."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: sa.Dialect) -> sa.types.TypeEngine:
        # SQLite has no datetime type: keep the raw text and parse it ourselves, leniently.
        return dialect.type_descriptor(sa.Text() if dialect.name == "sqlite" else sa.DateTime(timezone=True))

    def process_bind_param(self, value: Any, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime, got {value!r}")
        value = as_utc(value)
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return parse_time(value)


def _sqlite_begin_immediate(engine: Engine) -> None:
    """Take SQLite's write lock at BEGIN, so a claim (select, then update) is atomic across processes."""

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # let us issue BEGIN ourselves
        dbapi_connection.execute("PRAGMA foreign_keys=ON")
        dbapi_connection.execute("PRAGMA busy_timeout=30000")

    @sa.event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _psycopg2_lenient_timestamps(engine: Engine) -> None:
    """psycopg2 raises while fetching a batch holding year 10000 or a BC date, and turns `infinity` into a
    made-up 9999-12-31: hand such values through as their text, for :func:`parse_time` to call unreadable."""
    import psycopg2.extensions as extensions

    def cast(value: str | None, cursor: Any) -> Any:
        if value is None or value.endswith("infinity"):
            return value
        try:
            return extensions.PYDATETIMETZ(value, cursor)
        except (ValueError, OverflowError):
            return value

    lenient = extensions.new_type((1184,), "ELEVATION_LENIENT_TIMESTAMPTZ", cast)

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        extensions.register_type(lenient, dbapi_connection)


def create_engine_for_url(url: str) -> Engine:
    engine = sa.create_engine(url, future=True, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":
        _sqlite_begin_immediate(engine)
    elif engine.dialect.driver == "psycopg2":
        _psycopg2_lenient_timestamps(engine)
    return engine


def url_from_airflow_connection(conn_id: str) -> str:
    """The SQLAlchemy URL for an Airflow connection (conn types sqlite and postgres), read through Airflow's
    secrets backends so the queue database is configured like any other connection."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(conn_id)
    extra = conn.extra_dejson if conn.extra else {}
    if extra.get("sqlalchemy_url"):
        return str(extra["sqlalchemy_url"])
    if conn.conn_type == "sqlite":
        return f"sqlite:///{conn.host}"
    if conn.conn_type in ("postgres", "postgresql"):
        url = sa.engine.URL.create(
            "postgresql+psycopg2",
            username=conn.login or None,
            password=conn.password or None,
            host=conn.host or None,
            port=conn.port or None,
            database=conn.schema or None,
        )
        return url.render_as_string(hide_password=False)
    raise ValueError(f"connection {conn_id!r} has type {conn.conn_type!r}; use sqlite or postgres")


def dumps(detail: Any) -> str:
    return json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str)
