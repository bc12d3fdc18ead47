"""End to end through Airflow's real processes: a request filed through the REST API as the requester, the
approval answered through the REST API (refused for the requester, accepted for the approver), the request active.

Select it with `-m airflow_e2e` (or leave it out with `-m "not airflow_e2e"`). Every process it starts is stopped by
its process group id, also on failure; the wall time is printed.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import requests

from conftest import POSTGRES_ENV
from elevation.devkit.airflow_local import AirflowApi, LocalAirflow, living_group_members
from elevation.devkit.postgres import scratch_database

pytestmark = [pytest.mark.airflow_e2e, pytest.mark.timeout(900)]


@pytest.fixture
def local_airflow(tmp_path) -> Iterator[LocalAirflow]:  # noqa: ANN001
    """On PostgreSQL when the test server is known (as deployed; SQLite's one writer at a time is slow under four
    processes), else on SQLite files, as `make airflow` runs for a newcomer."""
    with contextlib.ExitStack() as stack:
        base = os.environ.get(POSTGRES_ENV)
        metadata = stack.enter_context(scratch_database(base, "airflow_e2e")) if base else None
        local = LocalAirflow(tmp_path / "airflow-local", metadata_url=metadata)
        started = local.processes  # the same dict: filled as processes start, so a failed start is cleaned up too
        try:
            local.start(timeout=240)
            yield local
        finally:
            pids = [process.pid for process in started.values()]
            local.stop()
            leftovers = {pid: living_group_members(pid) for pid in pids if living_group_members(pid)}
            assert not leftovers, f"process groups with living members after stop: {leftovers}"


Api = AirflowApi


def _start(api: AirflowApi, dag_id: str) -> None:
    """Start a run now instead of at the next minute. These DAGs are idempotent, so a start whose answer was lost
    (SQLite under load: a write can wait over a minute) is tried again rather than failing the test."""
    for attempt in range(3):
        try:
            api.post(f"/dags/{dag_id}/dagRuns", {"logical_date": None})
            return
        except requests.RequestException:
            if attempt == 2:
                raise


def wait_for(what: str, probe: Callable[[], Any], timeout: float, local: LocalAirflow) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = probe()
        except requests.RequestException:  # an API server slow to answer (SQLite under load) is "not yet"
            value = None
        if value:
            return value
        dead = [name for name, process in local.processes.items() if process.poll() is not None]
        assert not dead, f"airflow {dead} exited; {local.log_tail(dead[0])}"
        time.sleep(2)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; the scheduler's log ends:\n"
                         f"{local.log_tail('scheduler')}")


def test_a_request_is_approved_in_airflow_and_becomes_active(local_airflow: LocalAirflow):
    started = time.monotonic()
    local = local_airflow
    admin, erin, bob = Api(local.base_url, "admin"), Api(local.base_url, "erin"), Api(local.base_url, "bob")
    wanted = {"elevation_request", "elevation_approval", "elevation_approval_dispatch", "elevation_intake",
              "elevation_grants"}
    wait_for("the DAGs to be parsed", lambda: wanted <= admin.dag_ids(), 240, local)
    # The audit results' report links (audit.base_url) point at this API server's audit viewer, which answers there.
    assert _config(local)["audit"]["base_url"] == f"{local.base_url}/elevation/audit"
    assert admin.http.get(f"{local.base_url}/elevation/audit/", timeout=60).status_code == 200

    run = erin.post("/dags/elevation_request/dagRuns", {"logical_date": None, "conf": {
        "account_id": local.accounts["ec-prod"], "permission_set": "PowerUserAccess", "duration_minutes": 30,
        "justification": "release 4.2 (e2e)", "ticket": "CHG-900"}})
    assert run.status_code == 200, f"{run.text}; the api-server's log ends:\n{local.log_tail('api-server')}"
    run_id = run.json()["dag_run_id"]

    def state(dag_id: str, run_id: str) -> str | None:
        answer = admin.get(f"/dags/{dag_id}/dagRuns/{run_id}")
        return answer.json().get("state") if answer.status_code == 200 else None

    assert wait_for("elevation_request to finish",
                    lambda: state("elevation_request", run_id) in ("success", "failed") and
                    state("elevation_request", run_id), 240, local) == "success"
    assert _status(local, 1) == "pending"
    # The approvers are told in the fake Slack while it is pending (elevation_notify started now, not at the next
    # minute: a request already decided when the notifier first sees it is not put to the approvers any more).
    _start(admin, "elevation_notify")
    wait_for("the approvers' pending messages in Slack", lambda: (
        local.slack.messages_to("bob@example.com") and local.slack.messages_to("carol@example.com")), 240, local)
    assert any("CHG-900" in message.text or "CHG-900" in str(message.blocks)
               for message in local.slack.messages_to("bob@example.com")), _messages(local)

    # The dispatcher runs every minute; start it now instead of waiting for the next minute.
    _start(admin, "elevation_approval_dispatch")
    hitl = "/dags/elevation_approval/dagRuns/approval__1/taskInstances/ask/-1/hitlDetails"
    detail = wait_for("the approval to wait for an answer", lambda: admin.get(hitl).status_code == 200 and
                      admin.get(hitl).json(), 240, local)
    assert {user["id"] for user in detail["assigned_users"]} == {"bob", "carol", "elevation-system"}
    assert "erin" in detail["subject"] and "CHG-900" in detail["body"]

    # Answer as a person would, not within the second the task parked: Airflow 3.3 races when the answer comes before
    # the scheduler has processed the executor's event for the parking task (it sees "success" for a task already
    # re-queued by the trigger, fails that try and asks again on the next one; seen once in CI).
    ask = "/dags/elevation_approval/dagRuns/approval__1/taskInstances/ask"
    wait_for("the approval task to be parked", lambda: admin.get(ask).json().get("state") in (
        "awaiting_input", "deferred"), 240, local)
    time.sleep(5)
    refused = erin.patch(hitl, {"chosen_options": ["Approve"], "params_input": {"comment": "me"}})
    assert refused.status_code == 403, refused.text  # the requester is no respondent
    accepted = bob.patch(hitl, {"chosen_options": ["Approve"], "params_input": {"comment": "go ahead"}})
    assert accepted.status_code == 200, accepted.text

    assert wait_for("the approval run to finish",
                    lambda: state("elevation_approval", "approval__1") in ("success", "failed") and
                    state("elevation_approval", "approval__1"), 240, local) == "success"
    assert _status(local, 1) in ("approved", "active")
    _start(admin, "elevation_grants")
    wait_for("the request to be active", lambda: _status(local, 1) == "active", 300, local)
    row = _row(local, 1)
    assert row["decided_by"] == "bob" and row["requester"] == "erin"
    # And the requester was told, in the fake Slack: approved by bob, then active until the window's end.
    _start(admin, "elevation_notify")
    try:
        wait_for("the approved and active messages in Slack",
                 lambda: sum(1 for m in local.slack.messages_to("erin@example.com") if m.text.startswith((
                     "Your request for PowerUserAccess on ", "Your access is active: "))) >= 2, 240, local)
    except AssertionError as error:
        raise AssertionError(f"{error}; Slack got: {_messages(local)}") from None
    account_id = local.accounts["ec-prod"]
    titles = [f"PowerUserAccess on ec-prod ({account_id})",  # the account's name from Organizations
              f"PowerUserAccess on {account_id}"]  # the message without it, if Organizations did not answer
    told = [m.text for m in local.slack.messages_to("erin@example.com")]
    until = f"{row['end_at']:%Y-%m-%d %H:%M} UTC"
    assert told in ([f"Your request for {title} was approved by bob.", f"Your access is active: {title} until {until}"]
                    for title in titles), _messages(local)

    # Decided elsewhere while the approval waits: carol rejects request 2 with an action row (as the command line
    # or Slack would); the dispatcher closes the waiting approval through the REST API, and nothing else changes.
    second = erin.post("/dags/elevation_request/dagRuns", {"logical_date": None, "conf": {
        "account_id": local.accounts["ec-prod"], "permission_set": "PowerUserAccess", "duration_minutes": 30,
        "justification": "second (e2e)"}})
    assert second.status_code == 200, second.text
    wait_for("request 2 to be pending", lambda: _status(local, 2) == "pending", 240, local)
    _start(admin, "elevation_approval_dispatch")
    hitl2 = hitl.replace("approval__1", "approval__2")
    wait_for("approval 2 to wait", lambda: admin.get(hitl2).status_code == 200, 240, local)
    _reject_elsewhere(local, 2, "carol")
    _start(admin, "elevation_intake")
    wait_for("request 2 to be rejected", lambda: _status(local, 2) == "rejected", 240, local)
    _start(admin, "elevation_approval_dispatch")
    assert wait_for("approval 2 to end",
                    lambda: state("elevation_approval", "approval__2") in ("success", "failed") and
                    state("elevation_approval", "approval__2"), 240, local) == "success"
    closed = admin.get(hitl2).json()
    assert closed["responded_by_user"]["id"] == "elevation-system"
    row = _row(local, 2)
    assert row["status"] == "rejected" and row["decided_by"] == "carol"
    print(f"\nairflow UI e2e: approved in Airflow and active, then a stale approval closed, in "
          f"{time.monotonic() - started:.0f}s after the processes started")


def _config(local: LocalAirflow) -> dict:
    import yaml

    with open(local.env["ELEVATION_CONFIG"], encoding="utf-8") as file:
        return yaml.safe_load(file)


def _messages(local: LocalAirflow) -> str:
    return "; ".join(f"{m.user or m.channel}: {m.text[:80]}" for m in local.slack.messages)


def _reject_elsewhere(local: LocalAirflow, request_id: int, actor: str) -> None:
    from elevation.store import queue
    from elevation.store.database import create_engine_for_url

    engine = create_engine_for_url(local.queue_url)
    try:
        with engine.begin() as conn:
            queue.insert_action(conn, request_id, "reject", actor, "decided elsewhere (e2e)")
    finally:
        engine.dispose()


def _row(local: LocalAirflow, request_id: int) -> dict:
    from elevation.store import queue
    from elevation.store.database import create_engine_for_url

    engine = create_engine_for_url(local.queue_url)
    try:
        with engine.connect() as conn:
            row = queue.get_request(conn, request_id)
        return dict(row) if row else {}
    finally:
        engine.dispose()


def _status(local: LocalAirflow, request_id: int) -> str | None:
    return _row(local, request_id).get("status")
