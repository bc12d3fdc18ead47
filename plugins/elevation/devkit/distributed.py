"""`make test-distributed`: the production topology on this machine, checked end to end.

Airflow's scheduler, dag-processor, triggerer, api-server and two Celery workers (concurrency 1 each) run as separate
processes on PostgreSQL (Airflow's metadata and the queue, two fresh databases) and Redis (the broker), with this
project's DAGs against the AWS emulator. A batch of requests is filed as outside systems would (rows, then decisions
as action rows); the scheduled DAGs (intake, grants, revocations, every minute) take them to the end. It then checks:

- every request reached the final state it should (ended, rejected, cancelled);
- the emulator's account assignments are exactly the standing ones (every grant was removed; a standing one the
  system also granted was kept);
- tasks ran on both workers (each task instance records its worker's name as its hostname);

and prints tasks per worker, requests per state and the wall time. Every process it started is stopped by its
process group id and the databases are dropped, also when a check fails. Exit status 0 only if every check passed.

Needs PostgreSQL (`--postgres`, default $ELEVATION_TEST_POSTGRES_URL or postgres@127.0.0.1:5432/test) and Redis
(`--redis`, default redis://127.0.0.1:6379/11: that database is emptied at start and at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from elevation.devkit.airflow_local import AirflowApi, LocalAirflow, living_group_members
from elevation.devkit.postgres import scratch_database

DEFAULT_POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
DEFAULT_REDIS = "redis://127.0.0.1:6379/11"
DAGS = {"elevation_intake", "elevation_grants", "elevation_revocations"}


@dataclass(frozen=True)
class Planned:
    """One request of the batch: who asks for what, what happens to it, and where it must end."""

    requester: str
    account: str  # world name
    permission_set: str
    decision: tuple[str, str] | None  # (action, actor) filed right after the request, or None (policy decides)
    final: str
    minutes: int = 2


BATCH = (
    # Break-glass for on-call: approved by policy.
    Planned("alice", "media-prod", "AdministratorAccess", None, "ended"),
    Planned("dave", "ec-prod", "AdministratorAccess", None, "ended"),
    Planned("alice", "ec-prod", "AdministratorAccess", None, "ended"),
    # Approved by a named approver.
    Planned("erin", "ec-prod", "PowerUserAccess", ("approve", "bob"), "ended"),
    Planned("erin", "media-stg", "PowerUserAccess", ("approve", "bob"), "ended"),
    Planned("alice", "media-stg", "PowerUserAccess", ("approve", "bob"), "ended"),
    # Two overlapping sessions on one pair: the assignment stays until the later one ends, then goes.
    Planned("hanako", "sandbox-1", "PowerUserAccess", ("approve", "bob"), "ended"),
    Planned("hanako", "sandbox-1", "PowerUserAccess", ("approve", "bob"), "ended", minutes=3),
    # dave's PowerUserAccess on ec-prod is standing: granted "again", it must survive the session's end.
    Planned("dave", "ec-prod", "PowerUserAccess", ("approve", "carol"), "ended"),
    # Refused, withdrawn, not eligible.
    Planned("erin", "sandbox-1", "AdministratorAccess", ("reject", "bob"), "rejected"),
    Planned("erin", "sandbox-1", "PowerUserAccess", ("cancel", "erin"), "cancelled"),
    Planned("hanako", "ec-prod", "PowerUserAccess", None, "rejected"),
)


def file_batch(queue_url: str, accounts: dict[str, str], batch: tuple[Planned, ...] = BATCH) -> dict[int, Planned]:
    """Insert the batch (starting now) and its decisions; the request ids with what was planned for each."""
    from elevation.store import queue
    from elevation.store.database import create_engine_for_url

    engine = create_engine_for_url(queue_url)
    filed: dict[int, Planned] = {}
    try:
        with engine.begin() as conn:
            for number, planned in enumerate(batch, 1):
                request_id = queue.insert_request(
                    conn, requester=planned.requester, account_id=accounts[planned.account],
                    permission_set=planned.permission_set, duration_minutes=planned.minutes,
                    justification=f"distributed check #{number}", ticket=f"DIST-{number}",
                    start_at=datetime.now(UTC))
                if planned.decision:
                    action, actor = planned.decision
                    queue.insert_action(conn, request_id, action, actor, "distributed check")
                filed[request_id] = planned
    finally:
        engine.dispose()
    return filed


def statuses(queue_url: str) -> dict[int, str]:
    import sqlalchemy as sa

    from elevation.store.database import create_engine_for_url
    from elevation.store.tables import requests

    engine = create_engine_for_url(queue_url)
    try:
        with engine.connect() as conn:
            return {int(row.id): str(row.status) for row in conn.execute(sa.select(requests.c.id, requests.c.status))}
    finally:
        engine.dispose()


def assignments(emulator: Any) -> set[tuple[str, str, str, str]]:
    """Every account assignment in the emulated Identity Center: (account, permission set name, type, principal)."""
    sso = emulator.client("sso-admin")
    instance = sso.list_instances()["Instances"][0]["InstanceArn"]
    names = {arn: sso.describe_permission_set(InstanceArn=instance, PermissionSetArn=arn)["PermissionSet"]["Name"]
             for arn in sso.list_permission_sets(InstanceArn=instance)["PermissionSets"]}
    accounts = [account["Id"] for account in emulator.client("organizations").list_accounts()["Accounts"]]
    found = set()
    for account in accounts:
        for arn, name in names.items():
            pages = sso.get_paginator("list_account_assignments").paginate(
                InstanceArn=instance, AccountId=account, PermissionSetArn=arn)
            for page in pages:
                for item in page["AccountAssignments"]:
                    found.add((account, name, item["PrincipalType"], item["PrincipalId"]))
    return found


def standing(emulator: Any, accounts: dict[str, str]) -> set[tuple[str, str, str, str]]:
    """The world's standing assignments, in the form `assignments` returns."""
    from elevation.devkit.world import standing_assignments

    store = emulator.client("identitystore")
    sso = emulator.client("sso-admin")
    store_id = sso.list_instances()["Instances"][0]["IdentityStoreId"]
    users = {user["UserName"]: user["UserId"] for user in store.list_users(IdentityStoreId=store_id)["Users"]}
    groups = {group["DisplayName"]: group["GroupId"]
              for group in store.list_groups(IdentityStoreId=store_id)["Groups"]}
    return {(accounts[account], permission_set, kind, (users if kind == "USER" else groups)[name])
            for kind, name, permission_set, account in standing_assignments()}


def tasks_per_worker(metadata_url: str) -> Counter[str]:
    """Finished task instances by the hostname they recorded (the worker's name, see `worker_hostname`)."""
    import sqlalchemy as sa

    engine = sa.create_engine(metadata_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text(
                "SELECT hostname, count(*) FROM task_instance WHERE state = 'success' GROUP BY hostname"))
            return Counter({str(hostname).split("@")[0]: int(count) for hostname, count in rows})
    finally:
        engine.dispose()


def flush_redis(url: str) -> None:
    import redis

    redis.Redis.from_url(url, socket_timeout=5).flushdb()


def run(postgres: str, redis_url: str, folder: Path, timeout: float) -> list[str]:
    """The whole check; the problems found (empty: all good). Prints progress and the summary."""
    started = time.monotonic()
    problems: list[str] = []
    flush_redis(redis_url)
    with contextlib.ExitStack() as stack:
        metadata = stack.enter_context(scratch_database(postgres, "dist_airflow"))
        queue_url = stack.enter_context(scratch_database(postgres, "dist_queue"))
        local = LocalAirflow(folder, metadata_url=metadata, queue_url=queue_url, celery_broker_url=redis_url,
                             workers=2)
        stack.callback(flush_redis, redis_url)
        stack.callback(_stop_and_check, local, problems)
        print(f"starting scheduler, dag-processor, triggerer, api-server and 2 Celery workers under {folder} ...",
              flush=True)
        local.start(timeout=240)
        admin = AirflowApi(local.base_url, "admin")
        _wait(lambda: admin.dag_ids() >= DAGS, 240, "the DAGs to be parsed", local)
        print(f"up in {time.monotonic() - started:.0f}s; filing {len(BATCH)} requests", flush=True)
        filed = file_batch(local.queue_url, local.accounts)
        wanted = {request_id: planned.final for request_id, planned in filed.items()}
        final_states = set(wanted.values())

        def settled() -> bool:
            now = statuses(local.queue_url)
            return all(now.get(request_id) in final_states for request_id in wanted)

        try:
            _wait(settled, timeout, "every request to reach a final state", local, every=10,
                  progress=lambda: Counter(statuses(local.queue_url).values()))
        except TimeoutError as error:
            problems.append(str(error))
        reached = statuses(local.queue_url)
        for request_id, final in sorted(wanted.items()):
            if reached.get(request_id) != final:
                planned = filed[request_id]
                problems.append(f"request {request_id} ({planned.requester} {planned.permission_set} on "
                                f"{planned.account}, {planned.decision or 'policy'}): {reached.get(request_id)}, "
                                f"expected {final}")
        left, expected = assignments(local.emulator), standing(local.emulator, local.accounts)
        if left != expected:
            problems.append(f"assignments at the end are not the standing ones: extra {sorted(left - expected)}, "
                            f"missing {sorted(expected - left)}")
        workers = tasks_per_worker(metadata)
        for name in ("worker-1", "worker-2"):
            if not workers.get(name):
                problems.append(f"{name} ran no task: {dict(workers)}")
        print("\ntasks per worker:   " + ", ".join(f"{name} {count}" for name, count in sorted(workers.items())))
        print("requests per state: " + ", ".join(f"{state} {count}" for state, count in
                                                 sorted(Counter(reached.values()).items())))
        print(f"assignments left:   {len(left)} (standing: {len(expected)})")
    print(f"wall time:          {time.monotonic() - started:.0f}s")
    return problems


def _stop_and_check(local: LocalAirflow, problems: list[str]) -> None:
    pids = [process.pid for process in local.processes.values()]
    local.stop()
    leftovers = {pid: living_group_members(pid) for pid in pids if living_group_members(pid)}
    print(f"stopped {len(pids)} process groups" + (f"; STILL ALIVE: {leftovers}" if leftovers else ""), flush=True)
    if leftovers:
        problems.append(f"process groups with living members after stop: {leftovers}")


def _wait(probe: Any, timeout: float, what: str, local: LocalAirflow, every: float = 2.0,
          progress: Any = None) -> None:
    deadline = time.monotonic() + timeout
    last_report = time.monotonic()
    import requests

    while time.monotonic() < deadline:
        try:
            if probe():
                return
        except requests.RequestException:  # the API server slow to answer: not yet
            pass
        dead = [name for name, process in local.processes.items() if process.poll() is not None]
        if dead:
            raise RuntimeError(f"airflow {dead[0]} exited; its log ends:\n{local.log_tail(dead[0])}")
        if progress is not None and time.monotonic() - last_report >= 30:
            print(f"  ... {dict(progress())}", flush=True)
            last_report = time.monotonic()
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m elevation.devkit.distributed", description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default=os.environ.get("ELEVATION_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
                        help="a PostgreSQL URL on the server to use (two fresh databases are made there)")
    parser.add_argument("--redis", default=DEFAULT_REDIS, help="the broker; this Redis database is emptied")
    parser.add_argument("--timeout", type=float, default=600, help="seconds for the batch to settle")
    parser.add_argument("--dir", type=Path, help="working folder (default: a new temporary one)")
    args = parser.parse_args(argv)
    folder = args.dir or Path(tempfile.mkdtemp(prefix="elevation-distributed-"))
    try:
        problems = run(args.postgres, args.redis, folder, args.timeout)
    except Exception as error:  # a start that failed, a service that is down: say it plainly
        problems = [f"{type(error).__name__}: {error}"]
    if problems:
        print(f"\nFAILED ({len(problems)} problems; logs in {folder / 'logs'}):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return 1
    print("OK: every request reached its final state, only standing assignments remain, both workers ran tasks")
    return 0


if __name__ == "__main__":
    sys.exit(main())
