"""The `elevation` command files requests and decisions through the same rows and checks as everyone else."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from elevation import cli
from elevation.access.intake import run_intake
from elevation.pools import IDENTITY_CENTER_POOL
from elevation.store import queue
from elevation.store.database import create_engine_for_url
from elevation.store.migrations import current_revision, head_revision


def test_request_approve_and_status_round_trip(world, engine, queue_url, make_runtime, capsys):
    account = world.accounts["media-stg"]
    assert cli.main(["--database-url", queue_url, "request", "--requester", "erin", "--account", account,
                     "--permission-set", "PowerUserAccess", "--duration", "45", "--justification", "DB migration",
                     "--ticket", "CHG-9"]) == 0
    assert "request 1 filed" in capsys.readouterr().out
    assert cli.main(["--database-url", queue_url, "approve", "1", "--as", "bob", "--comment", "ok"]) == 0
    run_intake(make_runtime())
    capsys.readouterr()
    assert cli.main(["--database-url", queue_url, "status", "1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert (shown["status"], shown["decided_by"], shown["ticket"]) == ("approved", "bob", "CHG-9")
    with engine.connect() as conn:
        assert queue.get_action(conn, 1)["actor"] == "bob"


def test_bad_arguments_get_a_clear_error_and_a_nonzero_exit(queue_url, capsys):
    code = cli.main(["--database-url", queue_url, "request", "--requester", "erin", "--account", "111122223333",
                     "--permission-set", "X", "--duration", "60", "--start", "tomorrow-ish"])
    assert code == 2
    assert "start_at 'tomorrow-ish' is not an ISO 8601 time" in capsys.readouterr().err
    assert cli.main(["--database-url", queue_url, "revoke", "99", "--as", "bob"]) == 2
    assert "there is no request 99" in capsys.readouterr().err


@pytest.mark.parametrize("before_command", [True, False], ids=["option-first", "option-after-the-command"])
def test_db_upgrade_takes_the_database_url_before_or_after_the_command(tmp_path, capsys, before_command):
    url = ["--database-url", f"sqlite:///{tmp_path}/new.db"]
    argv = [*url, "db", "upgrade", "--no-pool"] if before_command else ["db", "upgrade", *url, "--no-pool"]
    assert cli.main(argv) == 0
    assert f"schema at revision {head_revision()}" in capsys.readouterr().out
    assert current_revision(create_engine_for_url(url[1])) == head_revision()


def _identity_center_pool() -> Any:
    from airflow.models.pool import Pool

    return Pool.get_pool(IDENTITY_CENTER_POOL)


def _delete_identity_center_pool() -> None:
    from airflow.models.pool import Pool

    if _identity_center_pool() is not None:
        Pool.delete_pool(IDENTITY_CENTER_POOL)


@pytest.fixture
def no_pool(airflow_db: None) -> Iterator[None]:
    """Airflow's test metadata database without the grant task's pool, before and after (it is shared)."""
    _delete_identity_center_pool()
    yield
    _delete_identity_center_pool()


def test_db_upgrade_creates_the_grant_tasks_pool_once_and_leaves_an_administrators_slots_alone(
    no_pool, tmp_path, capsys
):
    from airflow.models.pool import Pool

    argv = ["db", "upgrade", "--database-url", f"sqlite:///{tmp_path}/queue.db"]
    assert cli.main(argv) == 0
    assert f"Airflow pool {IDENTITY_CENTER_POOL} created with 1 slot(s)" in capsys.readouterr().out
    pool = _identity_center_pool()
    assert (pool.slots, pool.description) == (1, "Identity Center assignment creations")

    Pool.create_or_update_pool(IDENTITY_CENTER_POOL, slots=2, description=pool.description, include_deferred=False)
    assert cli.main(argv) == 0
    assert f"Airflow pool {IDENTITY_CENTER_POOL} exists with 2 slot(s), left as it is" in capsys.readouterr().out
    assert _identity_center_pool().slots == 2


def test_db_upgrade_without_a_reachable_airflow_database_warns_how_to_make_the_pool_and_still_migrates(tmp_path):
    missing = tmp_path / "no-airflow" / "airflow.db"
    unreachable = (f"sqlite:///{missing}", "postgresql+psycopg2://airflow@127.0.0.1:1/airflow")
    for number, metadata_url in enumerate(unreachable):
        queue_url = f"sqlite:///{tmp_path}/queue-{number}.db"
        done = subprocess.run(
            [sys.executable, "-m", "elevation.cli", "db", "upgrade", "--database-url", queue_url],
            env={**os.environ, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata_url},
            capture_output=True, text=True, timeout=120,
        )
        assert done.returncode == 0, done.stderr
        assert f"schema at revision {head_revision()}" in done.stdout
        assert f"warning: Airflow pool {IDENTITY_CENTER_POOL} not created" in done.stderr
        assert f'airflow pools set {IDENTITY_CENTER_POOL} 1 "Identity Center assignment creations"' in done.stderr
    assert not missing.exists()  # no empty metadata database left behind


def test_db_upgrade_where_airflow_is_not_installed_warns_and_still_migrates(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "airflow.models.pool", None)  # what a missing package looks like to import
    assert cli.main(["db", "upgrade", "--database-url", f"sqlite:///{tmp_path}/queue.db"]) == 0
    out, err = capsys.readouterr()
    assert f"schema at revision {head_revision()}" in out
    assert "Airflow is not importable here" in err and f"airflow pools set {IDENTITY_CENTER_POOL}" in err


# --- elevation drift --------------------------------------------------------------------------------------------

ADMIN_ARN = "arn:aws:sso:::permissionSet/ssoins-1/ps-admin"


@pytest.fixture
def drift_rows(engine) -> dict[str, int]:  # noqa: ANN001
    """Two open drift items as reconcile records them; the user's name carries a terminal escape and a newline."""
    from datetime import UTC, datetime

    from elevation.access.drift import Assignment, Drift, DriftKind
    from elevation.store import drift as drift_store

    found = [
        Drift(Assignment("111122223333", ADMIN_ARN, "USER", "u-1"), DriftKind.UNEXPECTED, None,
              "not created by this system, not standing"),
        Drift(Assignment("444455556666", ADMIN_ARN, "GROUP", "g-1"), DriftKind.LINGERING, 7,
              "request 7 has ended, but its assignment still exists"),
    ]
    names = drift_store.Names({("USER", "u-1"): "mallory\x1b[2J\nroot", ("GROUP", "g-1"): "platform"},
                              {ADMIN_ARN: "AdministratorAccess"})
    with engine.begin() as conn:
        opened, _, _ = drift_store.record_run(conn, found, names, at=datetime(2026, 1, 2, 3, 4, tzinfo=UTC))
    return {"unexpected": opened[0], "lingering": opened[1]}


def test_drift_prints_the_open_items_as_a_table(drift_rows, queue_url, capsys):
    assert cli.main(["--database-url", queue_url, "drift"]) == 0
    header, unexpected, lingering, total = capsys.readouterr().out.splitlines()
    assert header.split() == ["KIND", "PRINCIPAL", "PERMISSION", "SET", "ACCOUNT", "SINCE", "REQUEST", "DETAIL"]
    assert unexpected.split()[:2] == ["unexpected", "user"]
    assert "mallory\\x1b[2J\\nroot" in unexpected  # shown, not obeyed by the terminal
    for text in ("AdministratorAccess", "111122223333", "2026-01-02 03:04 UTC", "not created by this system"):
        assert text in unexpected
    assert "group platform" in lingering and "#7" in lingering and "request 7 has ended" in lingering
    assert header.index("DETAIL") == unexpected.index("not created") == lingering.index("request 7")  # aligned
    assert total == "2 open"


def test_drift_json_gives_every_column_of_each_open_item(drift_rows, queue_url, capsys):
    assert cli.main(["drift", "--json", "--database-url", queue_url]) == 0
    unexpected, lingering = json.loads(capsys.readouterr().out)
    assert unexpected == {
        "drift_id": drift_rows["unexpected"], "kind": "unexpected", "principal_type": "USER", "principal_id": "u-1",
        "principal_name": "mallory\x1b[2J\nroot", "permission_set_name": "AdministratorAccess",
        "permission_set_arn": ADMIN_ARN, "account_id": "111122223333", "request_id": None,
        "detail": "not created by this system, not standing", "first_seen_at": "2026-01-02T03:04:00+00:00",
        "last_seen_at": "2026-01-02T03:04:00+00:00", "resolved_at": None, "resolution": None,
    }
    assert (lingering["principal_type"], lingering["principal_name"], lingering["request_id"]) == ("GROUP", "platform", 7)


def test_drift_all_includes_resolved_items_with_how_they_ended(drift_rows, engine, queue_url, capsys):
    from datetime import UTC, datetime

    from elevation.store import drift as drift_store

    with engine.begin() as conn:
        drift_store.resolve(conn, drift_rows["lingering"], at=datetime(2026, 1, 2, 4, 0, tzinfo=UTC),
                            how="removed by reconcile")
    assert cli.main(["--database-url", queue_url, "drift"]) == 0
    assert "platform" not in capsys.readouterr().out
    assert cli.main(["--database-url", queue_url, "drift", "--all"]) == 0
    header, unexpected, lingering, total = capsys.readouterr().out.splitlines()
    assert header.split()[-2:] == ["RESOLVED", "RESOLUTION"]
    assert lingering.endswith("2026-01-02 04:00 UTC  removed by reconcile") and unexpected.endswith("open")
    assert total == "1 open, 1 resolved"
    assert cli.main(["--database-url", queue_url, "drift", "--all", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(row["kind"], row["resolution"]) for row in rows] == [("unexpected", None),
                                                                  ("lingering", "removed by reconcile")]


def test_drift_without_items_says_so(queue_url, capsys):
    assert cli.main(["--database-url", queue_url, "drift"]) == 0
    assert capsys.readouterr().out == "no open drift items\n"
    assert cli.main(["--database-url", queue_url, "drift", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
