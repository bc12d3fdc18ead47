"""The schema: versioned migrations that upgrade a database in place, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from datetime import UTC

import pytest
import sqlalchemy as sa

from elevation.store import queue
from elevation.store.database import create_engine_for_url
from elevation.store.migrations import current_revision, upgrade
from elevation.store.tables import metadata


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/queue.db"
    return request.getfixturevalue("postgres_url")


def test_a_database_created_by_the_first_migration_upgrades_to_the_latest_keeping_its_rows(empty_database):
    engine = create_engine_for_url(empty_database)
    upgrade(engine, "0001")
    assert current_revision(engine) == "0001"
    with engine.begin() as conn:
        request_id = queue.insert_request(conn, requester="alice", account_id="111122223333",
                                          permission_set="ReadOnlyAccess", duration_minutes=30,
                                          justification="障害調査")
    assert "elevation_heartbeat" not in sa.inspect(engine).get_table_names()

    upgrade(engine)
    assert current_revision(engine) == "0004"
    assert "elevation_heartbeat" in sa.inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert queue.get_request(conn, request_id)["justification"] == "障害調査"
    upgrade(engine)  # idempotent
    assert current_revision(engine) == "0004"


def test_the_migrated_schema_matches_what_the_code_reads_and_writes(empty_database):
    engine = create_engine_for_url(empty_database)
    upgrade(engine)
    inspector = sa.inspect(engine)
    for table in metadata.sorted_tables:
        migrated = {column["name"] for column in inspector.get_columns(table.name)}
        assert migrated == set(table.columns.keys()), table.name


def test_times_are_stored_in_utc_whatever_zone_they_came_in(empty_database):
    from datetime import datetime, timedelta, timezone

    engine = create_engine_for_url(empty_database)
    upgrade(engine)
    tokyo = timezone(timedelta(hours=9))
    with engine.begin() as conn:
        request_id = queue.insert_request(conn, requester="hanako", account_id="111122223333",
                                          permission_set="ReadOnlyAccess", duration_minutes=30,
                                          start_at=datetime(2026, 11, 29, 9, 0, tzinfo=tokyo))
    with engine.connect() as conn:
        start = queue.get_request(conn, request_id)["start_at"]
    assert start == datetime(2026, 11, 29, 0, 0, tzinfo=UTC)
    assert start.utcoffset() == timedelta(0)


def test_the_outside_roles_may_do_what_they_are_for_and_nothing_else(postgres_url):
    from elevation.resources import data_path

    engine = create_engine_for_url(postgres_url)
    upgrade(engine)
    with engine.begin() as conn:
        conn.exec_driver_sql((data_path("sql") / "postgresql_intake_role.sql").read_text())
    insert = ("INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, "
              "justification) VALUES ('alice', '111122223333', 'X', 60, 'j')")
    with engine.begin() as conn:
        conn.exec_driver_sql("SET ROLE elevation_intake")
        conn.exec_driver_sql(insert)
        assert conn.execute(sa.text("SELECT status, status_reason FROM elevation_request")).one() == ("pending", None)
    with engine.begin() as conn:
        conn.exec_driver_sql("SET ROLE elevation_decisions")
        conn.exec_driver_sql("INSERT INTO elevation_action (request_id, action, actor) VALUES (1, 'approve', 'bob')")
        conn.exec_driver_sql(
            "INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, status, "
            "approver) VALUES ('alice', '111122223333', 'X', 60, 'approved', 'bob')"
        )
    forbidden = {
        "elevation_intake": [
            "INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, status, "
            "approver) VALUES ('a', '111122223333', 'X', 60, 'approved', 'bob')",
            "INSERT INTO elevation_action (request_id, action, actor) VALUES (1, 'approve', 'bob')",
            "SELECT justification FROM elevation_request",
        ],
        "elevation_decisions": ["SELECT * FROM elevation_event", "UPDATE elevation_action SET outcome = 'applied'"],
    }
    common = [
        "UPDATE elevation_request SET status = 'active'",
        "DELETE FROM elevation_request",
        "SELECT claimed_by FROM elevation_request",
        "SELECT * FROM elevation_session",
        "INSERT INTO elevation_request (requester, account_id, permission_set, duration_minutes, granted_at) "
        "VALUES ('a', '1', 'p', 1, now())",
    ]
    for role, statements in forbidden.items():
        for statement in statements + common:
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"), engine.begin() as conn:
                conn.exec_driver_sql(f"SET ROLE {role}")
                conn.exec_driver_sql(statement)


@pytest.mark.parametrize(
    "values",
    [
        {"duration_minutes": 0},
        {"duration_minutes": -30},
        {"duration_minutes": 10**9},
        {"start_at": "infinity"},
        {"start_at": "10000-01-01 00:00:00+00"},
        {"start_at": "0044-03-15 12:00:00+00"},
        {"start_at": "1970-01-01 00:00:00+00"},
    ],
    ids=lambda values: "-".join(f"{key}={value}" for key, value in values.items()),
)
def test_the_database_refuses_absurd_times_and_durations_at_insert(empty_database, values):
    engine = create_engine_for_url(empty_database)
    upgrade(engine)
    row = {"requester": "alice", "account_id": "111122223333", "permission_set": "ReadOnlyAccess",
           "duration_minutes": 30, "status": "pending", "revoke_attempts": 0, **values}
    columns = ", ".join(row)
    placeholders = ", ".join(f":{key}" for key in row)
    with pytest.raises(sa.exc.DBAPIError, match="sensible|duration_minutes must be|out of range"):
        with engine.begin() as conn:
            conn.execute(sa.text(f"INSERT INTO elevation_request ({columns}, created_at) "
                                 f"VALUES ({placeholders}, CURRENT_TIMESTAMP)"), row)
