"""Two workers processing the queue at once on PostgreSQL never grant the same request twice."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime

import sqlalchemy as sa

from elevation.lifecycle import Status
from elevation.store import queue
from elevation.store.database import create_engine_for_url
from elevation.store.migrations import upgrade

WORKER = """
import sys
from datetime import datetime, UTC
from elevation.config import load_config
from elevation.access.grants import run_grants
from elevation.runtime import Runtime, identity_center_from_airflow
from elevation.store.database import create_engine_for_url

runtime = Runtime(config=load_config(), engine=create_engine_for_url(sys.argv[1]),
                  identity_center_factory=identity_center_from_airflow, as_of=datetime.now(UTC),
                  actor="worker-" + sys.argv[2], worker="worker-" + sys.argv[2])
print(run_grants(runtime).activated)
"""


def test_two_processes_granting_at_once_never_grant_a_request_twice(world, configure, postgres_url):
    engine = create_engine_for_url(postgres_url)
    upgrade(engine)
    now = datetime.now(UTC)
    expected_creations = 0
    with engine.begin() as conn:
        for requester in ("alice", "dave", "bob", "carol", "erin"):
            for account in ("media-prod", "ec-prod"):
                for permission_set in ("AdministratorAccess", "PowerUserAccess"):
                    request_id = queue.insert_request(
                        conn, requester=requester, account_id=world.accounts[account], permission_set=permission_set,
                        duration_minutes=60, justification="release", start_at=now, status="approved",
                        approver="carol" if requester == "bob" else "bob",
                    )
                    queue.update_request(conn, request_id, validated_at=now, end_at=now.replace(year=now.year + 1))
                    standing = (requester, permission_set, account) == ("dave", "PowerUserAccess", "ec-prod")
                    expected_creations += 0 if standing else 1
    world.emulator.identity_center.hold_creations(polls=2)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, postgres_url, str(n)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for n in (1, 2)
    ]
    results = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_out, err) in zip(workers, results, strict=True):
        assert worker.returncode == 0, err[-3000:]
    activated = [json.loads(out.strip().splitlines()[-1]) for out, _ in results]
    assert activated[0] and activated[1], "both workers should have had work"
    assert not set(activated[0]) & set(activated[1])
    assert len(activated[0]) + len(activated[1]) == 20

    with engine.connect() as conn:
        confirmed = conn.execute(
            sa.select(queue.events.c.request_id, sa.func.count())
            .where(queue.events.c.to_status == Status.ACTIVE.value)
            .group_by(queue.events.c.request_id)
        ).all()
        sessions = conn.execute(sa.select(sa.func.count()).select_from(queue.sessions)).scalar_one()
    assert len(confirmed) == 20 and all(count == 1 for _, count in confirmed)
    assert sessions == 20
    assert world.emulator.calls.count("CreateAccountAssignment") == expected_creations


def _runtime(engine: sa.Engine, name: str):  # noqa: ANN202
    from elevation.config import load_config
    from elevation.runtime import Runtime, identity_center_from_airflow

    return Runtime(config=load_config(), engine=engine, identity_center_factory=identity_center_from_airflow,
                   as_of=datetime.now(UTC), actor=name, worker=name)


def _at_once(functions: list) -> list:  # noqa: ANN001
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(functions)) as pool:
        return [future.result() for future in [pool.submit(function) for function in functions]]


def test_three_intakes_at_once_apply_each_action_once_and_write_its_outcome_once(world, configure, postgres_url):
    from elevation.access.intake import run_intake

    engine = create_engine_for_url(postgres_url)
    upgrade(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        request_id = queue.insert_request(conn, requester="erin", account_id=world.accounts["media-prod"],
                                          permission_set="PowerUserAccess", duration_minutes=60,
                                          justification="release", start_at=now)
    run_intake(_runtime(engine, "first"))
    with engine.begin() as conn:
        approve = queue.insert_action(conn, request_id, "approve", "carol")
        refused = queue.insert_action(conn, request_id, "reject", "erin")  # not an approver (and it is hers)
    summaries = _at_once([lambda n=n: run_intake(_runtime(engine, f"intake-{n}")) for n in range(3)])

    assert sum(len(summary.actions_applied) for summary in summaries) == 1
    with engine.connect() as conn:
        assert queue.get_action(conn, approve)["outcome"] == "applied"
        assert queue.get_action(conn, refused)["outcome"] == "refused"
        events = conn.execute(sa.select(queue.events).where(queue.events.c.request_id == request_id)).mappings().all()
    approvals = [e for e in events if e["kind"] == "transition" and e["to_status"] == "approved"]
    refusals = [e for e in events if e["kind"] == "action_refused"]
    assert len(approvals) == 1 and len(refusals) == 1


def test_two_intakes_at_once_validate_each_row_once(world, configure, postgres_url):
    from elevation.access.intake import run_intake

    engine = create_engine_for_url(postgres_url)
    upgrade(engine)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        ids = [
            queue.insert_request(conn, requester=requester, account_id=world.accounts[account],
                                 permission_set="PowerUserAccess", duration_minutes=60, justification="work",
                                 start_at=now)
            for requester in ("alice", "bob", "carol", "erin", "dave")
            for account in ("media-stg", "media-prod", "ec-prod", "sandbox-1", "media-stg", "ec-prod")
        ]
    _at_once([lambda n=n: run_intake(_runtime(engine, f"intake-{n}")) for n in range(2)])
    with engine.connect() as conn:
        judged = conn.execute(
            sa.select(queue.events.c.request_id, sa.func.count())
            .where(sa.or_(queue.events.c.kind == "validated", queue.events.c.to_status.in_(["rejected", "approved"])))
            .group_by(queue.events.c.request_id)
        ).all()
    assert sorted(request_id for request_id, _ in judged) == sorted(ids)
    assert all(count == 1 for _, count in judged), judged
