"""The request lifecycle end to end through the real DAGs (`dag.test()`), checked against Identity Center."""

from __future__ import annotations

from datetime import UTC, datetime

from conftest import minutes
from elevation.store import queue


def test_request_is_approved_granted_confirmed_and_revoked_through_the_dags(
    world, engine, file_request, request_row, run_dag, run_grant_cycle
):
    now = datetime.now(UTC)
    request_id = file_request(requester="alice", start_at=now + minutes(5), duration_minutes=60)

    assert run_grant_cycle(now) == "success"
    assert request_row(request_id)["status"] == "pending"  # Staging needs an approver
    assert not world.has_assignment("alice", "media-stg", "PowerUserAccess")

    with engine.begin() as conn:
        queue.insert_action(conn, request_id, "approve", "bob", "go ahead")
    assert run_grant_cycle(now + minutes(1)) == "success"
    row = request_row(request_id)
    assert (row["status"], row["decided_by"]) == ("scheduled", "bob")
    assert not world.has_assignment("alice", "media-stg", "PowerUserAccess")

    assert run_grant_cycle(now + minutes(6)) == "success"
    row = request_row(request_id)
    assert row["status"] == "active" and row["granted_at"] is not None
    assert world.has_assignment("alice", "media-stg", "PowerUserAccess")
    assert world.assignments("media-stg", "PowerUserAccess").count(("USER", world.users["alice"])) == 1

    assert run_dag("elevation_revocations", now + minutes(30)).state == "success"
    assert request_row(request_id)["status"] == "active"

    assert run_dag("elevation_revocations", now + minutes(66)).state == "success"
    row = request_row(request_id)
    assert (row["status"], row["reason_code"]) == ("ended", "assignment_removed")
    assert not world.has_assignment("alice", "media-stg", "PowerUserAccess")
    # The standing ReadOnlyAccess of alice in the same account was never touched.
    assert world.has_assignment("alice", "media-stg", "ReadOnlyAccess")


def test_every_transition_and_aws_call_is_in_the_event_log(world, engine, file_request, run_dag, run_grant_cycle):
    now = datetime.now(UTC)
    request_id = file_request(
        requester="dave", account_id="media-prod", permission_set="AdministratorAccess", start_at=now
    )
    run_grant_cycle(now)
    run_dag("elevation_revocations", now + minutes(61))
    with engine.connect() as conn:
        events = conn.execute(queue.events.select().order_by(queue.events.c.id)).mappings().all()
    transitions = [(e["from_status"], e["to_status"], e["reason_code"]) for e in events
                   if e["request_id"] == request_id and e["kind"] == "transition"]
    assert transitions == [
        ("pending", "approved", "auto_approved"),
        ("approved", "active", "grant_confirmed"),
        ("active", "ending", "end_time_reached"),
        ("ending", "ended", "assignment_removed"),
    ]
    calls = [e for e in events if e["kind"] == "aws_call"]
    operations = {__import__("json").loads(e["detail"])["operation"] for e in calls}
    assert {"CreateAccountAssignment", "DescribeAccountAssignmentCreationStatus", "DeleteAccountAssignment"} <= operations
    assert all(e["actor"].startswith("dag:elevation_") for e in calls)


def test_a_rerun_of_the_grant_never_creates_a_second_assignment(world, file_request, request_row, run_dag, run_grant_cycle):
    now = datetime.now(UTC)
    request_id = file_request(
        requester="dave", account_id="media-prod", permission_set="AdministratorAccess", start_at=now
    )
    run_grant_cycle(now)
    run_grant_cycle(now)
    run_grant_cycle(now + minutes(1))
    assert request_row(request_id)["status"] == "active"
    assert world.emulator.calls.count("CreateAccountAssignment") == 1
    assert world.assignments("media-prod", "AdministratorAccess") == [("USER", world.users["dave"])]
