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
from elevation.grants import run_grants
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
