"""The schema: versioned migrations that upgrade a database in place, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from datetime import UTC

import pytest
import sqlalchemy as sa

from elevation.store import queue
from elevation.store.database import create_engine_for_url
from elevation.store.migrations import current_revision, head_revision, upgrade
from elevation.store.tables import metadata


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
    assert current_revision(engine) == "0009"
    assert "elevation_heartbeat" in sa.inspect(engine).get_table_names()
    with engine.connect() as conn:
        assert queue.get_request(conn, request_id)["justification"] == "障害調査"
    upgrade(engine)  # idempotent
    assert current_revision(engine) == "0009"


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
    with pytest.raises(sa.exc.DBAPIError, match="sensible|duration_minutes must be|out of range"), \
            engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO elevation_request ({columns}, created_at) "
                             f"VALUES ({placeholders}, CURRENT_TIMESTAMP)"), row)


def test_an_up_to_date_database_is_checked_in_one_query_without_alembic_and_without_a_word(
    empty_database, monkeypatch, caplog
):
    engine = create_engine_for_url(empty_database)
    upgrade(engine)

    def alembic_must_not_run(*args, **kwargs):
        raise AssertionError("Alembic ran on an up-to-date database")

    monkeypatch.setattr("alembic.command.upgrade", alembic_must_not_run)
    statements = []
    sa.event.listen(engine, "before_cursor_execute", lambda conn, cursor, statement, *rest: statements.append(statement))
    with caplog.at_level(logging.DEBUG):
        upgrade(engine)
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.INFO] == []
    assert [statement for statement in statements if not statement.startswith(("BEGIN", "SELECT 1"))] == [
        "SELECT version_num \nFROM elevation_schema_version"
    ]


def test_a_new_process_finds_an_up_to_date_database_without_loading_alembic(empty_database):
    upgrade(create_engine_for_url(empty_database))
    script = (
        "import logging, sys\n"
        "logging.basicConfig(level=logging.DEBUG)\n"
        "from elevation.store.database import create_engine_for_url\n"
        "from elevation.store.migrations import upgrade\n"
        "upgrade(create_engine_for_url(sys.argv[1]))\n"
        "assert not [name for name in sys.modules if name.startswith('alembic')], 'Alembic was loaded'\n"
    )
    done = subprocess.run([sys.executable, "-c", script, empty_database], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert [line for line in done.stderr.splitlines() if not line.startswith("DEBUG:")] == []


def test_the_head_read_from_the_scripts_is_the_one_alembic_reads():
    from alembic.script import ScriptDirectory

    from elevation.store.migrations import _config

    assert head_revision() == ScriptDirectory.from_config(_config(None)).get_current_head() == "0009"


def test_a_database_behind_is_migrated_to_the_head_with_one_line_saying_from_where_to_where(empty_database, caplog):
    engine = create_engine_for_url(empty_database)
    upgrade(engine, "0001")
    with caplog.at_level(logging.INFO):
        upgrade(engine)
    assert current_revision(engine) == head_revision() == "0009"
    assert [record.getMessage() for record in caplog.records if record.levelno >= logging.INFO] == [
        "elevation schema upgraded from 0001 to 0009"
    ]


def test_processes_upgrading_one_postgresql_database_at_once_migrate_it_once(postgres_url):
    # Each process waits for the same moment, so their upgrades overlap; without the lock one fails on a table
    # the other just created.
    start = time.time() + 3
    script = (
        "import logging, sys, time\n"
        "logging.basicConfig(level=logging.INFO)\n"
        "from elevation.store.database import create_engine_for_url\n"
        "from elevation.store.migrations import upgrade\n"
        "engine = create_engine_for_url(sys.argv[1])\n"
        "time.sleep(max(0.0, float(sys.argv[2]) - time.time()))\n"
        "upgrade(engine)\n"
    )
    processes = [subprocess.Popen([sys.executable, "-c", script, postgres_url, str(start)], stderr=subprocess.PIPE,
                                  text=True) for _ in range(4)]
    errors = [process.communicate(timeout=120)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0, 0, 0], errors
    engine = create_engine_for_url(postgres_url)
    assert current_revision(engine) == "0009"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM elevation_schema_version")).scalar() == 1
    assert sum("upgraded from an empty database to 0009" in error for error in errors) == 1
