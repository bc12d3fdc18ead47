"""One hostile row never stops intake or grants: it ends rejected with a reason naming it, the others proceed.

The database refuses absurd times and durations at insert (migration 0004, tests/store/test_migrations.py). Rows
already written before that, or by someone who can drop the constraint, still reach intake: PostgreSQL's
`infinity`, a time whose end overflows Python, a year Python cannot hold, a BC date; on SQLite, text no parser
reads. Each is judged alone.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from elevation.access.grants import run_grants
from elevation.access.intake import run_intake
from elevation.cli import main as elevation_cli
from elevation.config import load_config
from elevation.lifecycle import Status
from elevation.runtime import Runtime, identity_center_from_airflow
from elevation.store import queue
from elevation.store.database import create_engine_for_url
from elevation.store.migrations import upgrade

HOSTILE_STARTS = [
    ("postgresql", "infinity", "start_at 'infinity' is not a valid time"),
    ("postgresql", "-infinity", "start_at '-infinity' is not a valid time"),
    ("postgresql", "9999-12-31 23:00+00", "is not a sensible time"),
    ("postgresql", "10000-01-01 00:00+00", "is not a valid time"),
    ("postgresql", "0044-03-15 12:00+00 BC", "is not a valid time"),
    ("postgresql", "1970-01-01 00:00+00", "is not a sensible time"),
    ("sqlite", "next tuesday", "start_at 'next tuesday' is not a valid time"),
    ("sqlite", "10000-01-01 00:00:00", "is not a valid time"),
]


@pytest.fixture
def database(request, queue_url):
    """The queue on the dialect the case names, with the insert-time checks of migration 0004 lifted, as a database
    holding rows written before them would be."""
    dialect = request.param
    url = queue_url if dialect == "sqlite" else request.getfixturevalue("postgres_url")
    engine = create_engine_for_url(url)
    upgrade(engine)
    with engine.begin() as conn:
        if dialect == "postgresql":
            conn.exec_driver_sql("ALTER TABLE elevation_request DROP CONSTRAINT elevation_request_sensible_start")
        else:
            conn.exec_driver_sql("DROP TRIGGER elevation_request_sensible_values")
    return url, engine


def _runtime(engine: sa.Engine, actor: str) -> Runtime:
    return Runtime(config=load_config(), engine=engine, identity_center_factory=identity_center_from_airflow,
                   as_of=datetime.now(UTC), actor=actor, worker=actor)


@pytest.mark.parametrize(
    ("database", "raw_start", "reason"),
    [pytest.param(dialect, raw, reason, id=f"{dialect}-{raw}") for dialect, raw, reason in HOSTILE_STARTS],
    indirect=["database"],
)
def test_a_hostile_start_time_is_rejected_and_innocent_requests_are_granted(
    database, raw_start, reason, world, configure
):
    url, engine = database
    account = world.accounts["media-prod"]
    with engine.begin() as conn:
        innocent_before = queue.insert_request(
            conn, requester="dave", account_id=account, permission_set="AdministratorAccess",
            duration_minutes=60, justification="db-1 disk full", start_at=datetime.now(UTC))
        conn.execute(
            sa.text("INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, "
                    "justification, start_at, status, revoke_attempts, created_at) VALUES ('dave', :account, "
                    "'AdministratorAccess', 120, 'x', :start, 'pending', 0, CURRENT_TIMESTAMP)"),
            {"account": account, "start": raw_start},
        )
        hostile = conn.execute(sa.text("SELECT max(id) FROM elevation_request")).scalar_one()
        innocent_after = queue.insert_request(
            conn, requester="alice", account_id=account, permission_set="AdministratorAccess",
            duration_minutes=30, justification="page from on-call", start_at=datetime.now(UTC))

    intake = run_intake(_runtime(engine, "intake"))
    grants = run_grants(_runtime(engine, "grants"))

    with engine.connect() as conn:
        rows = {row["id"]: row for row in queue.requests_in(conn, list(Status))}
    assert rows[hostile]["status"] == "rejected"
    assert reason in rows[hostile]["status_reason"]
    assert [request_id for request_id, _ in intake.rejected] == [hostile]
    assert sorted(grants.activated) == [innocent_before, innocent_after]

    out = io.StringIO()
    with redirect_stdout(out):
        assert elevation_cli(["--database-url", url, "status"]) == 0
    assert f"{hostile:>6}  rejected" in out.getvalue()
