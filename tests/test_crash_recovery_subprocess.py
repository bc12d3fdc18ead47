"""A real `airflow dags test` killed in the middle of a grant: the access it was creating still ends, confirmed.

The sandbox (`python -m elevation.devkit.sandbox`) serves the emulated organization from its own process. The grant
runs in a real `airflow dags test elevation_grants` subprocess that reaches it over HTTP; the emulator holds the
creation IN_PROGRESS, and the subprocess (its whole process group) is SIGKILLed as soon as CreateAccountAssignment
has arrived. The creation then succeeds in AWS, which now holds an assignment only the dead run knew about. The DAGs
run on as the scheduler would run them, and the promise is checked: the request reaches a terminal state only
through a confirmed removal, and no assignment for that principal, permission set and account is left.

Only the killed run is a separate Airflow process (it must be, to be killed); the runs after it go through
`dag.test()` in this process, which is what `airflow dags test` calls, without another ~20 s start-up each. Most of
the test's time is two floors: that start-up, and the dead run's claim, a lease of at least a minute in real time.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
import sqlalchemy as sa
import yaml

from elevation.devkit.emulator import EmulatorControl
from elevation.devkit.sandbox import read_env
from elevation.store import queue
from elevation.store.database import create_engine_for_url

pytestmark = pytest.mark.timeout(300)

STATUS_WAIT_BOUND = "5s"
#: How long the dead run's claim on the request may keep the next runs away. The claim is a lease in real time,
#: so the scheduler (here: a tick each time the claim may have lapsed) picks the request up again after it.
CLAIM_PATIENCE = 90.0
TICK = 5.0
CREATE = "CreateAccountAssignment"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def sandbox(folder: Path) -> Iterator[dict[str, str]]:
    """The sandbox in its own process; its env.sh as a dict. Stopped with SIGTERM at the end."""
    folder.mkdir(parents=True)
    log = folder.parent / "sandbox.log"
    with log.open("w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "elevation.devkit.sandbox", "--port", str(free_port()), "--dir", str(folder)],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=folder.parent,
        )
    try:
        deadline = time.monotonic() + 60
        while not (folder / "env.sh").exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        yield read_env(folder / "env.sh")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def shorten_the_wait_bound(config: Path) -> None:
    document = yaml.safe_load(config.read_text(encoding="utf-8"))
    document["policy"].setdefault("grants", {})["status_wait_bound"] = STATUS_WAIT_BOUND
    config.write_text(yaml.safe_dump(document, allow_unicode=True, sort_keys=False), encoding="utf-8")


def aws_ids(endpoint_url: str, account: str, user: str, permission_set: str) -> dict[str, str]:
    """The ids Identity Center lists an assignment by, looked up in the sandbox like any AWS client would."""
    session = boto3.session.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    org = session.client("organizations", endpoint_url=endpoint_url)
    sso = session.client("sso-admin", endpoint_url=endpoint_url)
    store = session.client("identitystore", endpoint_url=endpoint_url)
    accounts = {a["Name"]: a["Id"] for a in org.list_accounts()["Accounts"]}
    instance = sso.list_instances()["Instances"][0]
    arns = sso.list_permission_sets(InstanceArn=instance["InstanceArn"], MaxResults=100)["PermissionSets"]
    names = {
        sso.describe_permission_set(InstanceArn=instance["InstanceArn"], PermissionSetArn=arn)["PermissionSet"][
            "Name"
        ]: arn
        for arn in arns
    }
    user_id = store.get_user_id(
        IdentityStoreId=instance["IdentityStoreId"],
        AlternateIdentifier={"UniqueAttribute": {"AttributePath": "userName", "AttributeValue": user}},
    )["UserId"]
    return {"AccountId": accounts[account], "PrincipalId": user_id, "PermissionSetArn": names[permission_set]}


def file_request(account_id: str, start: datetime, log: Path) -> int:
    """`elevation request`, as a person would file it (dave is on call: policy auto-approves him in production)."""
    done = subprocess.run(
        [sys.executable, "-m", "elevation.cli", "request", "--requester", "dave", "--account", account_id,
         "--permission-set", "AdministratorAccess", "--duration", "30", "--start", start.isoformat(),
         "--justification", "disk full on db-1", "--ticket", "INC-7"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    log.write_text(done.stdout + done.stderr, encoding="utf-8")
    assert done.returncode == 0, done.stderr
    found = re.search(r"request (\d+) filed", done.stdout)
    assert found, done.stdout
    return int(found.group(1))


def airflow_dags_test(dag_id: str, logical_date: datetime, log: Path) -> subprocess.Popen[bytes]:
    """`airflow dags test` in its own process group (so a SIGKILL takes every process it started)."""
    with log.open("w", encoding="utf-8") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "airflow", "dags", "test", dag_id, logical_date.isoformat()],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )


def request_state(engine: sa.Engine, request_id: int) -> tuple[dict[str, Any], dict[str, Any] | None, list[str]]:
    """The request row, its session row, and its transitions ("from -> to (reason)") in order."""
    with engine.connect() as conn:
        row = queue.get_request(conn, request_id)
        session = queue.session_for(conn, request_id)
        moves = conn.execute(
            sa.select(queue.events.c.from_status, queue.events.c.to_status, queue.events.c.reason_code)
            .where(queue.events.c.request_id == request_id, queue.events.c.kind == "transition")
            .order_by(queue.events.c.id)
        ).all()
    assert row is not None
    history = [f"{old} -> {new} ({why})" for old, new, why in moves]
    return dict(row), dict(session) if session else None, history


def test_a_grant_killed_mid_creation_ends_only_through_a_confirmed_removal(
    tmp_path: Path, dagbag: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    with sandbox(tmp_path / "sandbox") as env:
        for name in ("ELEVATION_CONFIG", "AIRFLOW_CONN_AWS_DEFAULT", "AIRFLOW_CONN_ELEVATION_DB", "ELEVATION_DATABASE_URL"):
            monkeypatch.setenv(name, env[name])  # the DAG runs below, in process and in subprocesses, use the sandbox
        shorten_the_wait_bound(Path(env["ELEVATION_CONFIG"]))
        control = EmulatorControl(env["ELEVATION_EMULATOR_URL"])
        target = aws_ids(env["ELEVATION_EMULATOR_URL"], "media-prod", "dave", "AdministratorAccess")
        engine = create_engine_for_url(env["ELEVATION_DATABASE_URL"])
        assert control.assignments(**target) == []  # dave has no standing admin access there

        def run_in_process(dag_id: str, at: datetime) -> None:
            """One scheduled run, as `airflow dags test` would make it, in this process (saves a start-up)."""
            dag = dagbag.get_dag(dag_id)
            for task in dag.tasks:
                task.retries = 0
            dag.test(logical_date=at)

        intake_dags = ["elevation_intake"] if "elevation_intake" in dagbag.dag_ids else []
        start = datetime.now(UTC).replace(microsecond=0)
        request_id = file_request(target["AccountId"], start, tmp_path / "request.log")
        for dag_id in intake_dags:
            run_in_process(dag_id, start)
            assert request_state(engine, request_id)[0]["status"] == "approved"  # auto-approved: on call

        # The grant, in a real Airflow process, killed right after its CreateAccountAssignment reached AWS.
        control.hold_creations(polls=None)
        since = control.calls().next
        grants_log = tmp_path / "grants-killed.log"
        worker = airflow_dags_test("elevation_grants", start, grants_log)
        try:
            deadline = time.monotonic() + 120
            while not control.calls(since).count(CREATE):
                assert worker.poll() is None, f"the grant run ended before creating:\n{grants_log.read_text()}"
                assert time.monotonic() < deadline, f"no {CREATE} after 120 s:\n{grants_log.read_text()}"
                time.sleep(0.02)
        finally:
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()
        killed_at = time.monotonic()
        assert worker.returncode == -signal.SIGKILL
        assert len(control.assignments(**target)) == 1  # the creation landed; only the dead run knew of it

        # AWS finishes the creation; new ones are confirmed after one describe again.
        assert control.release_creations() == 1
        control.hold_creations(polls=1)

        # The scheduler runs on: intake and grants at each tick, until a run takes the request up again.
        while True:
            for dag_id in [*intake_dags, "elevation_grants"]:
                run_in_process(dag_id, datetime.now(UTC))
            row, _, _ = request_state(engine, request_id)
            waited = time.monotonic() - killed_at
            if row["status"] not in ("approved", "scheduled") or waited > CLAIM_PATIENCE:
                break
            # The next tick comes once the dead run's claim has lapsed (the column only paces the test).
            lapses_in = (row["claimed_until"] - datetime.now(UTC)).total_seconds() if row["claimed_until"] else 0
            time.sleep(min(lapses_in, CLAIM_PATIENCE - waited) + 0.5 if lapses_in > 0 else TICK)

        # After the session's end: every DAG runs once more, the revocations last.
        for dag_id in [*intake_dags, "elevation_grants", "elevation_revocations"]:
            run_in_process(dag_id, start + timedelta(minutes=31))

        row, session, history = request_state(engine, request_id)
        story = f"request {request_id}: {' | '.join(history)}; session: {session}"
        removed = session is not None and session["assignment_removed_at"] is not None
        assert row["status"] == "ended" or (row["status"] == "failed" and removed), story
        assert removed, story
        assert control.assignments(**target) == [], story
