"""A worker killed mid-grant never leaves access nobody tracks (in-process: the kill is an exception no handler
catches, raised right after an AWS call or before a database write, so nothing after it runs).

tests/test_crash_recovery_subprocess.py does the same with a real `airflow dags test` process and SIGKILL.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from conftest import minutes
from elevation.access.grants import run_grants
from elevation.access.intake import run_intake
from elevation.access.revocations import run_revocations
from elevation.runtime import Runtime
from elevation.store import queue


class Killed(BaseException):
    """The process died here (BaseException: no `except Exception` in the code under test survives it)."""


def kill_after_call(runtime: Runtime, operation: str) -> Runtime:
    """Make the runtime's process die right after AWS answered `operation` (before anything is recorded)."""
    recorded = runtime.record_aws_call

    def record(name: str, attempt: int, error: BaseException | None) -> None:
        recorded(name, attempt, error)
        if name == operation:
            raise Killed(f"killed after {operation}")

    runtime.record_aws_call = record  # type: ignore[method-assign]
    return runtime


@pytest.fixture
def clock() -> Callable[..., Callable[[], datetime]]:
    """A real clock shifted by a settable offset, so a test can let a dead worker's lease lapse."""
    offset = {"by": timedelta(0)}

    def _clock(shift: timedelta | None = None) -> Callable[[], datetime]:
        if shift is not None:
            offset["by"] = shift
        return lambda: datetime.now(UTC) + offset["by"]

    return _clock


def dave_admin(file_request, **values):  # noqa: ANN001, ANN201
    """dave is on call: AdministratorAccess in production is auto-approved for up to 2 hours."""
    return file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess", **values)


def test_a_retry_of_the_killed_task_resumes_its_creation_at_once(
    world, engine, file_request, request_row, make_runtime
):
    request_id = dave_admin(file_request)
    run_intake(make_runtime())
    world.emulator.identity_center.hold_creations(polls=None)
    killed = kill_after_call(make_runtime(actor="try-1"), "CreateAccountAssignment")
    killed.worker = "elevation_grants/run-1/grant"
    with pytest.raises(Killed):
        run_grants(killed)
    with engine.connect() as conn:
        session = queue.session_for(conn, request_id)
    assert session["creation_sent_at"] is not None and session["creation_request_id"] is None  # died before recording
    assert request_row(request_id)["claimed_by"] == "elevation_grants/run-1/grant"

    world.emulator.identity_center.hold_creations(polls=0)
    retry = make_runtime(actor="try-2")
    retry.worker = "elevation_grants/run-1/grant"  # Airflow's retry of the same task instance
    summary = run_grants(retry)
    assert summary.activated == [request_id]
    assert world.emulator.calls.count("CreateAccountAssignment") == 1  # it looked before creating again
    assert world.assignments("media-prod", "AdministratorAccess") == [("USER", world.users["dave"])]


def test_a_killed_grant_whose_end_passes_ends_through_a_confirmed_removal_never_expired(
    world, engine, file_request, request_row, make_runtime, clock
):
    start = datetime.now(UTC)
    request_id = dave_admin(file_request, start_at=start, duration_minutes=30)
    run_intake(make_runtime(as_of=start))
    world.emulator.identity_center.hold_creations(polls=None)
    with pytest.raises(Killed):
        run_grants(kill_after_call(make_runtime(as_of=start, actor="dead"), "CreateAccountAssignment"))
    world.emulator.identity_center.hold_creations(polls=0)  # AWS completes the creation anyway

    # Before the dead worker's lease lapses, other workers leave the row alone; nothing expires it meanwhile.
    assert run_grants(make_runtime(as_of=start + minutes(1), actor="other")).activated == []
    assert request_row(request_id)["status"] == "approved"

    later = start + minutes(45)  # the end has passed, and so has the lease
    summary = run_grants(make_runtime(as_of=later, actor="next", clock=clock(minutes(45))))
    row = request_row(request_id)
    assert summary.expired == [] and row["status"] == "active"  # the truth: the access exists
    assert world.has_assignment("dave", "media-prod", "AdministratorAccess")

    run_revocations(make_runtime(as_of=later, actor="revoker", clock=clock(minutes(45))))
    row = request_row(request_id)
    assert (row["status"], row["reason_code"]) == ("ended", "assignment_removed")
    assert not world.has_assignment("dave", "media-prod", "AdministratorAccess")
    with engine.connect() as conn:
        assert queue.session_for(conn, request_id)["deletion_status"] == "SUCCEEDED"


def test_a_lease_lapses_on_the_task_bound_not_a_fixed_fifteen_minutes(
    world, file_request, request_row, make_runtime, configure, clock
):
    configure(grants={"status_poll_initial": "0.05s", "status_poll_max": "0.5s", "status_wait_bound": "20s"})
    request_id = dave_admin(file_request)
    run_intake(make_runtime())
    world.emulator.identity_center.hold_creations(polls=None)
    with pytest.raises(Killed):
        run_grants(kill_after_call(make_runtime(actor="dead"), "CreateAccountAssignment"))
    world.emulator.identity_center.hold_creations(polls=0)
    assert make_runtime().lease == timedelta(minutes=1)  # bound + two poll intervals, at least a minute
    assert run_grants(make_runtime(clock=clock(timedelta(seconds=50)))).activated == []
    assert run_grants(make_runtime(clock=clock(timedelta(seconds=70)))).activated == [request_id]


def test_a_cancel_waits_for_a_grant_whose_creation_was_sent_and_never_orphans_it(
    world, engine, file_request, request_row, make_runtime, clock
):
    request_id = dave_admin(file_request)
    run_intake(make_runtime())
    world.emulator.identity_center.hold_creations(polls=None)
    with pytest.raises(Killed):
        run_grants(kill_after_call(make_runtime(actor="dead"), "CreateAccountAssignment"))
    world.emulator.identity_center.hold_creations(polls=0)
    with engine.begin() as conn:
        queue.insert_action(conn, request_id, "cancel", "dave")
    later = clock(minutes(5))
    run_intake(make_runtime(clock=later))  # the lease has lapsed, but the creation is still in flight
    assert request_row(request_id)["status"] == "approved"
    run_grants(make_runtime(clock=later))
    run_intake(make_runtime(clock=later))
    with engine.connect() as conn:
        action = conn.execute(sa.select(queue.actions)).mappings().one()
    assert request_row(request_id)["status"] == "active"
    assert action["outcome"] == "refused"
    assert action["outcome_reason"] == "cannot cancel a request that is active; end it early with revoke"
