"""Revocations: confirmed, never removing access another session or a standing assignment still needs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from conftest import minutes
from elevation.access.grants import run_grants
from elevation.access.intake import run_intake
from elevation.access.revocations import RevocationOverdue, run_revocations
from elevation.store import queue


def grant_at(make_runtime, when):
    runtime = make_runtime(as_of=when)
    run_intake(runtime)
    return run_grants(runtime)


def test_overlapping_sessions_keep_the_assignment_until_the_last_one_ends(
    world, file_request, request_row, make_runtime
):
    now = datetime.now(UTC)
    first = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                         start_at=now, duration_minutes=60)
    second = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                          start_at=now + minutes(30), duration_minutes=90)
    grant_at(make_runtime, now)
    grant_at(make_runtime, now + minutes(31))
    assert request_row(first)["status"] == request_row(second)["status"] == "active"

    summary = run_revocations(make_runtime(as_of=now + minutes(61)))
    assert summary.ended == [first] and summary.kept and summary.kept[0][0] == first
    row = request_row(first)
    assert (row["status"], row["reason_code"]) == ("ended", "assignment_kept_for_other_need")
    assert f"request {second} is still active" in row["status_reason"]
    assert world.has_assignment("dave", "media-prod", "AdministratorAccess")
    assert world.emulator.calls.count("DeleteAccountAssignment") == 0

    run_revocations(make_runtime(as_of=now + minutes(121)))
    assert (request_row(second)["status"], request_row(second)["reason_code"]) == ("ended", "assignment_removed")
    assert not world.has_assignment("dave", "media-prod", "AdministratorAccess")


def test_a_standing_assignment_for_the_same_triple_is_never_removed(world, file_request, request_row, make_runtime):
    # dave holds PowerUserAccess in ec-prod as a standing assignment; a temporary request for the same triple
    # is granted on top of it and must not take it away when it ends.
    now = datetime.now(UTC)
    request_id = file_request(requester="dave", account_id="ec-prod", permission_set="PowerUserAccess",
                              start_at=now, duration_minutes=30, status="approved", approver="bob")
    grant_at(make_runtime, now)
    assert request_row(request_id)["status"] == "active"
    assert world.emulator.calls.count("CreateAccountAssignment") == 0  # already there: nothing to create

    run_revocations(make_runtime(as_of=now + minutes(31)))
    row = request_row(request_id)
    assert (row["status"], row["reason_code"]) == ("ended", "assignment_kept_for_other_need")
    assert "standing assignment" in row["status_reason"]
    assert world.has_assignment("dave", "ec-prod", "PowerUserAccess")
    assert world.emulator.calls.count("DeleteAccountAssignment") == 0


def test_early_revocation_written_to_the_table_ends_the_session_as_revoked(
    world, engine, file_request, request_row, make_runtime
):
    now = datetime.now(UTC)
    request_id = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                              start_at=now, duration_minutes=120)
    grant_at(make_runtime, now)
    with engine.begin() as conn:  # what an outside system (or the CLI, or the form) does
        queue.insert_action(conn, request_id, "revoke", "dave", "incident resolved")
    grant_at(make_runtime, now + minutes(10))  # intake applies the action
    row = request_row(request_id)
    assert (row["status"], row["reason_code"], row["revoke_requested_by"]) == ("ending", "revocation_requested", "dave")
    summary = run_revocations(make_runtime(as_of=now + minutes(11)))
    assert summary.revoked == [request_id]
    assert request_row(request_id)["status"] == "revoked"
    assert not world.has_assignment("dave", "media-prod", "AdministratorAccess")


def heartbeat(engine):  # noqa: ANN001, ANN201
    import sqlalchemy as sa

    from elevation.store.tables import heartbeats

    with engine.connect() as conn:
        return conn.execute(sa.select(heartbeats)).mappings().one()


def test_a_revoke_that_keeps_failing_stays_ending_is_retried_and_fails_the_run_once_overdue(
    world, engine, file_request, request_row, make_runtime, run_dag
):
    now = datetime.now(UTC)
    request_id = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                              start_at=now, duration_minutes=60)
    grant_at(make_runtime, now)
    control = world.emulator.identity_center
    control.fail_next_deletions(reason="Internal failure while removing the assignment", times=3)

    summary = run_revocations(make_runtime(as_of=now + minutes(61)))  # due, not yet overdue
    assert summary.failing and summary.failing[0][0] == request_id
    row = request_row(request_id)
    assert (row["status"], row["revoke_attempts"]) == ("ending", 1)
    assert "Internal failure while removing" in row["status_reason"]
    assert world.has_assignment("dave", "media-prod", "AdministratorAccess")
    assert heartbeat(engine)["outcome"] == "retrying"  # failing, not yet overdue: a monitor can warn before paging

    with pytest.raises(RevocationOverdue, match=str(request_id)):
        run_revocations(make_runtime(as_of=now + minutes(75)))
    assert request_row(request_id)["revoke_attempts"] == 2

    # Through the DAG: the run fails (so alerts fire) but still records the attempt and its heartbeat.
    dag_run = run_dag("elevation_revocations", now + minutes(76))
    assert dag_run.state == "failed"
    assert request_row(request_id)["revoke_attempts"] == 3

    # Once AWS cooperates again, the next run removes the access and succeeds.
    assert run_dag("elevation_revocations", now + minutes(77)).state == "success"
    assert request_row(request_id)["status"] == "ended"
    assert not world.has_assignment("dave", "media-prod", "AdministratorAccess")


def test_each_run_leaves_a_heartbeat_an_outside_monitor_can_check(engine, make_runtime):
    as_of = datetime.now(UTC)
    run_revocations(make_runtime(as_of=as_of))
    beat = heartbeat(engine)
    assert beat["job"] == "elevation_revocations" and beat["outcome"] == "ok"
    assert beat["as_of"] == as_of


def test_a_new_grant_waits_for_the_removal_of_the_same_assignment_then_gets_its_own(
    world, file_request, request_row, make_runtime
):
    now = datetime.now(UTC)
    first = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                         start_at=now, duration_minutes=60)
    grant_at(make_runtime, now)
    world.emulator.identity_center.fail_next_deletions(reason="transient failure")
    run_revocations(make_runtime(as_of=now + minutes(60)))
    assert request_row(first)["status"] == "ending"  # its removal is still under way
    second = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                          start_at=now + minutes(60), duration_minutes=60)
    summary = grant_at(make_runtime, now + minutes(60))
    assert [request_id for request_id, _ in summary.deferred] == [second]
    assert world.emulator.calls.count("CreateAccountAssignment") == 1  # nothing created that the removal could undo

    run_revocations(make_runtime(as_of=now + minutes(61)))
    assert request_row(first)["status"] == "ended"
    assert not world.has_assignment("dave", "media-prod", "AdministratorAccess")
    assert grant_at(make_runtime, now + minutes(62)).activated == [second]
    assert world.has_assignment("dave", "media-prod", "AdministratorAccess")


def test_a_due_session_waits_while_a_grant_of_the_same_assignment_is_in_flight(
    world, engine, file_request, request_row, make_runtime
):
    now = datetime.now(UTC)
    first = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                         start_at=now, duration_minutes=60)
    grant_at(make_runtime, now)
    second = file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess",
                          start_at=now + minutes(59), duration_minutes=60)
    run_intake(make_runtime(as_of=now + minutes(59)))
    with engine.begin() as conn:  # another worker's grant of the same assignment is mid-flight
        copied = {key: value for key, value in dict(queue.session_for(conn, first)).items() if key != "id"}
        queue.create_session(conn, **{**copied, "request_id": second, "creation_request_id": "in-flight",
                                      "creation_status": "IN_PROGRESS", "granted_at": None})
    run_revocations(make_runtime(as_of=now + minutes(60)))
    row = request_row(first)
    assert row["status"] == "ending" and "waiting for a grant of the same assignment" in row["status_reason"]
    assert world.emulator.calls.count("DeleteAccountAssignment") == 0
