"""The `elevation` command files requests and decisions through the same rows and checks as everyone else."""

from __future__ import annotations

import json

from elevation import cli
from elevation.intake import run_intake
from elevation.store import queue


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


def test_db_upgrade_reports_the_revision(tmp_path, capsys):
    assert cli.main(["--database-url", f"sqlite:///{tmp_path}/new.db", "db", "upgrade"]) == 0
    assert "schema at revision 0003" in capsys.readouterr().out
