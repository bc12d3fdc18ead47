"""Grants: only a confirmed creation makes a request active; limits, retries and faults on the wire."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from elevation.access.grants import run_grants
from elevation.access.intake import run_intake


@pytest.fixture
def grant_now(make_runtime):
    """Run intake then grants as of now, like one elevation_grants run."""

    def _run(**runtime_args):
        runtime = make_runtime(**runtime_args)
        run_intake(runtime)
        return run_grants(runtime)

    return _run


def oncall_request(file_request, **values):
    """dave is on call: AdministratorAccess in production is auto-approved for up to 2 hours."""
    return file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess", **values)


def test_a_creation_that_aws_reports_failed_marks_the_request_failed_with_the_reason(
    world, file_request, request_row, grant_now
):
    world.emulator.identity_center.fail_next_creations(reason="Received a 404 status error: Not supported")
    request_id = oncall_request(file_request)
    summary = grant_now()
    row = request_row(request_id)
    assert row["status"] == "failed" and row["reason_code"] == "grant_not_confirmed"
    assert "Received a 404 status error" in row["status_reason"]
    assert summary.failed[0][0] == request_id and not summary.activated
    assert not world.has_assignment("dave", "media-prod", "AdministratorAccess")


def test_a_creation_still_in_progress_past_the_bound_is_failed_not_active(
    world, configure, file_request, request_row, grant_now, make_runtime
):
    configure(grants={"status_poll_initial": "0.05s", "status_poll_max": "0.1s", "status_wait_bound": "0.6s"})
    world.emulator.identity_center.hold_creations(polls=None)
    request_id = oncall_request(file_request)
    grant_now()
    row = request_row(request_id)
    assert row["status"] == "failed"
    assert "not confirmed within" in row["status_reason"] and "IN_PROGRESS" in row["status_reason"]
    # The creation may still complete later: the next revocations run removes it rather than leave stray access.
    world.emulator.identity_center.hold_creations(polls=0)
    from elevation.access.revocations import run_revocations
    from elevation.store import queue

    run_revocations(make_runtime())
    assert world.emulator.calls.count("DeleteAccountAssignment") == 1
    assert not world.has_assignment("dave", "media-prod", "AdministratorAccess")
    with make_runtime().engine.connect() as conn:
        assert queue.session_for(conn, request_id)["assignment_removed_at"] is not None


def test_a_status_answer_without_a_status_never_counts_as_confirmed(
    world, configure, file_request, request_row, grant_now
):
    configure(grants={"status_poll_initial": "0.05s", "status_poll_max": "0.1s", "status_wait_bound": "0.6s"})
    world.emulator.identity_center.omit_status_next_creations()
    request_id = oncall_request(file_request)
    grant_now()
    row = request_row(request_id)
    assert row["status"] == "failed"
    assert "no status in the answer" in row["status_reason"]


def test_a_burst_of_thirty_approvals_all_end_active_with_at_most_ten_creations_in_flight(
    world, file_request, request_row, grant_now
):
    world.emulator.identity_center.hold_creations(polls=3)
    users = ["alice", "dave"]  # both on call
    accounts = ["media-prod", "ec-prod"]
    ids = []
    for index in range(30):
        # 30 distinct requests; duplicates of a triple are legitimate overlapping sessions.
        ids.append(
            file_request(
                requester=users[index % 2],
                account_id=accounts[(index // 2) % 2],
                permission_set="AdministratorAccess",
                justification=f"incident INC-{index}",
            )
        )
    summary = grant_now()
    assert sorted(summary.activated) == ids
    assert all(request_row(request_id)["status"] == "active" for request_id in ids)
    assert world.emulator.identity_center.max_creations_in_flight <= 10
    # Overlapping sessions share one assignment: one creation per (user, account).
    assert world.emulator.calls.count("CreateAccountAssignment") == 4


def test_throttling_and_conflicts_on_the_wire_are_retried_until_the_run_converges(
    world, file_request, request_row, grant_now
):
    faults = world.emulator.faults
    faults.inject("CreateAccountAssignment", "ConflictException", message="another operation is in progress", times=2)
    faults.inject("DescribeAccountAssignmentCreationStatus", "ThrottlingException", message="Rate exceeded", times=3)
    faults.inject("ListGroupMembershipsForMember", "ThrottlingException", message="Rate exceeded", times=1)
    faults.inject("GetUserId", "InternalServerException", http_status=500, times=1)
    request_id = oncall_request(file_request)
    summary = grant_now()
    assert faults.remaining == 0
    assert summary.activated == [request_id]
    assert request_row(request_id)["status"] == "active"
    assert world.assignments("media-prod", "AdministratorAccess") == [("USER", world.users["dave"])]


def test_an_approved_request_starting_later_is_scheduled_then_granted_when_its_start_comes(
    world, file_request, request_row, make_runtime
):
    now = datetime.now(UTC)
    from conftest import minutes

    request_id = oncall_request(file_request, start_at=now + minutes(30))
    runtime = make_runtime(as_of=now)
    run_intake(runtime)
    assert run_grants(runtime).scheduled == [request_id]
    assert request_row(request_id)["status"] == "scheduled"
    later = make_runtime(as_of=now + minutes(31))
    assert run_grants(later).activated == [request_id]
    assert world.has_assignment("dave", "media-prod", "AdministratorAccess")


def test_access_whose_end_has_passed_by_the_real_clock_is_never_granted(file_request, request_row, make_runtime):
    from conftest import minutes

    now = datetime.now(UTC)
    request_id = oncall_request(file_request, start_at=now - minutes(50), duration_minutes=45)
    back_then = now - minutes(49)
    run_intake(make_runtime(as_of=back_then, clock=lambda: back_then))
    assert request_row(request_id)["status"] == "approved"
    # A replay of that moment, run now: by the real clock the session would already be over.
    summary = run_grants(make_runtime(as_of=back_then))
    assert summary.expired == [request_id] and not summary.activated
    row = request_row(request_id)
    assert (row["status"], row["reason_code"]) == ("expired", "window_passed")


def test_a_group_grant_records_the_members_for_the_audit(world, engine, file_request, request_row, grant_now):
    from elevation.store import queue

    request_id = file_request(requester="bob", account_id="media-prod", permission_set="PowerUserAccess",
                              principal_group="platform", approver="carol", status="approved")
    grant_now()
    assert request_row(request_id)["status"] == "active"
    with engine.connect() as conn:
        session = queue.session_for(conn, request_id)
    assert session["principal_type"] == "GROUP" and session["principal_name"] == "platform"
    assert __import__("json").loads(session["group_members"]) == ["bob", "carol"]
    assert ("GROUP", world.groups["platform"]) in world.assignments("media-prod", "PowerUserAccess")


def test_an_unconfirmed_grant_that_cannot_be_cleaned_up_fails_the_revocations_run_once_overdue(
    world, configure, file_request, request_row, grant_now, make_runtime
):
    from conftest import minutes
    from elevation.access.revocations import RevocationOverdue, run_revocations

    configure(grants={"status_poll_initial": "0.05s", "status_poll_max": "0.1s", "status_wait_bound": "0.6s"})
    world.emulator.identity_center.hold_creations(polls=None)
    request_id = oncall_request(file_request)
    grant_now()
    assert request_row(request_id)["status"] == "failed"
    world.emulator.identity_center.hold_creations(polls=0)
    world.emulator.identity_center.fail_next_deletions(reason="still busy", times=5)
    summary = run_revocations(make_runtime())
    assert summary.failing and summary.failing[0][0] == request_id
    with pytest.raises(RevocationOverdue, match=str(request_id)):
        run_revocations(make_runtime(as_of=datetime.now(UTC) + minutes(11)))


def test_an_assignment_that_existed_outside_the_system_is_recorded_and_kept_at_the_end(
    world, engine, file_request, request_row, grant_now, make_runtime
):
    from elevation.access.revocations import run_revocations
    from elevation.store import queue

    sso = world.emulator.client("sso-admin")
    sso.create_account_assignment(  # a console click nobody told the system about
        InstanceArn=world.instance_arn, TargetId=world.accounts["media-prod"], TargetType="AWS_ACCOUNT",
        PermissionSetArn=world.permission_sets["AdministratorAccess"], PrincipalType="USER",
        PrincipalId=world.users["dave"],
    )
    now = datetime.now(UTC)
    request_id = oncall_request(file_request, start_at=now, duration_minutes=30)
    assert grant_now(as_of=now).activated == [request_id]
    with engine.connect() as conn:
        assert queue.session_for(conn, request_id)["assignment_preexisted"] is True
    assert world.emulator.calls.count("CreateAccountAssignment") == 1  # only the console's

    run_revocations(make_runtime(as_of=now + timedelta(minutes=31)))
    row = request_row(request_id)
    assert (row["status"], row["reason_code"]) == ("ended", "assignment_kept_for_other_need")
    assert "existed before this system granted it" in row["status_reason"]
    assert world.has_assignment("dave", "media-prod", "AdministratorAccess")  # someone's access, left alone
    with engine.connect() as conn:
        kinds = [event["kind"] for event in conn.execute(queue.events.select()).mappings()]
    assert "preexisting_assignment" in kinds and "preexisting_assignment_kept" in kinds


def test_an_assignment_made_by_an_earlier_session_is_ours_and_removed_when_the_last_session_ends(
    world, engine, file_request, request_row, grant_now, make_runtime
):
    from elevation.access.revocations import run_revocations
    from elevation.store import queue

    now = datetime.now(UTC)
    first = oncall_request(file_request, start_at=now, duration_minutes=30)
    grant_now(as_of=now)
    second = oncall_request(file_request, start_at=now, duration_minutes=60)
    grant_now(as_of=now)
    with engine.connect() as conn:
        assert queue.session_for(conn, second)["assignment_preexisted"] is False
    run_revocations(make_runtime(as_of=now + timedelta(minutes=31)))
    assert request_row(first)["reason_code"] == "assignment_kept_for_other_need"
    run_revocations(make_runtime(as_of=now + timedelta(minutes=61)))
    assert request_row(second)["reason_code"] == "assignment_removed"
    assert not world.has_assignment("dave", "media-prod", "AdministratorAccess")


def test_an_aws_outage_defers_with_a_warning_on_the_row_then_fails_the_run_once_overdue(
    world, engine, configure, file_request, request_row, make_runtime
):
    from elevation.access.grants import GrantsOverdue
    from elevation.store import queue

    configure(grants={"status_poll_initial": "0.05s", "status_poll_max": "0.1s", "status_wait_bound": "2s",
                      "overdue_after": "10m"})
    now = datetime.now(UTC)
    request_id = oncall_request(file_request, start_at=now)
    run_intake(make_runtime(as_of=now))
    world.emulator.faults.inject("CreateAccountAssignment", "ServiceUnavailableException", http_status=503,
                                 times=1000)
    runtime = make_runtime(as_of=now)
    runtime.identity_center.retry = runtime.identity_center.retry.__class__(attempts=2, base_delay=0.01)
    summary = run_grants(runtime)
    row = request_row(request_id)
    assert summary.deferred and row["status"] == "approved"
    assert row["status_reason"].startswith("grant deferred: ") and "ServiceUnavailable" in row["status_reason"]
    with engine.connect() as conn:
        warnings = [e for e in conn.execute(queue.events.select()).mappings() if e["kind"] == "warning"]
    assert any("grant deferred" in warning["detail"] for warning in warnings)

    later = make_runtime(as_of=now + timedelta(minutes=11))
    later.identity_center.retry = runtime.identity_center.retry
    with pytest.raises(GrantsOverdue, match=rf"request {request_id}: grant deferred: .*ServiceUnavailable"):
        run_grants(later)
    world.emulator.faults.clear()
