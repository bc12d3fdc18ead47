"""Grants: approved requests whose start has come become confirmed Identity Center account assignments.

A request turns active only when DescribeAccountAssignmentCreationStatus says SUCCEEDED. Idempotent: the session
row (unique per request) and the recorded creation request id mean a retried or re-run task resumes waiting for
the same request instead of creating a second assignment; an assignment that already exists (another session,
a standing assignment) is used, not created again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import timedelta

from botocore.exceptions import BotoCoreError, ClientError

from elevation.aws import error_code
from elevation.confirm import Outcome, PollSettings, confirm_all
from elevation.identity_center import AssignmentStatus
from elevation.intake import CheckUnavailable, check_request
from elevation.lifecycle import Status
from elevation.needs import other_needs
from elevation.runtime import Runtime
from elevation.store import queue

log = logging.getLogger(__name__)
CLAIM_LEASE = timedelta(minutes=15)


@dataclass
class GrantSummary:
    activated: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    scheduled: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    deferred: list[tuple[int, str]] = field(default_factory=list)  # left for the next run (AWS unavailable)


@dataclass
class _Grant:
    row: queue.Row
    principal_type: str
    principal_id: str
    account_id: str
    permission_set_arn: str


def poll_settings(runtime: Runtime) -> PollSettings:
    grants = runtime.policy.grants
    return PollSettings(
        max_in_flight=grants.max_creations_in_flight,
        initial_interval=grants.status_poll_initial,
        max_interval=grants.status_poll_max,
        bound=grants.status_wait_bound,
    )


def run_grants(runtime: Runtime) -> GrantSummary:
    """Claim approved requests a batch at a time (so parallel workers share the queue) and grant them."""
    summary = GrantSummary()
    settings = poll_settings(runtime)
    seen: set[int] = set()
    creating: dict[
        tuple[str, str, str, str], str
    ] = {}  # assignment -> the creation request this run made for it
    while True:
        claimed = queue.claim(
            runtime.engine,
            statuses=[Status.APPROVED, Status.SCHEDULED],
            worker=runtime.worker,
            now=runtime.now(),
            lease=CLAIM_LEASE,
            limit=settings.max_in_flight,
            skip=seen,
        )
        if not claimed:
            return summary
        seen.update(row["id"] for row in claimed)
        due = [row for row in claimed if _ready(runtime, row, summary)]
        grants = [grant for grant in (_prepare(runtime, row, summary) for row in due) if grant is not None]
        confirm_all(
            grants,
            start=lambda grant: _start(runtime, grant, creating),
            describe=runtime.identity_center.creation_status,
            settings=settings,
            on_outcome=lambda outcome: _settle(runtime, outcome, summary),
            sleep=runtime.sleep,
            monotonic=runtime.monotonic,
        )


def _release(runtime: Runtime, request_id: int) -> None:
    with runtime.engine.begin() as conn:
        queue.release(conn, request_id, runtime.worker)


def _move(
    runtime: Runtime, row: queue.Row, target: Status, code: str, reason: str | None = None, **updates: object
) -> None:
    with runtime.engine.begin() as conn:
        queue.transition(
            conn,
            row["id"],
            expected=row["status"],
            target=target,
            reason_code=code,
            actor=runtime.actor,
            at=runtime.now(),
            reason=reason,
            claimed_by=None,
            claimed_until=None,
            **updates,
        )


def _ready(runtime: Runtime, row: queue.Row, summary: GrantSummary) -> bool:
    """Decide what to do with a claimed row: grant now, schedule, expire, or leave for intake."""
    if row["validated_at"] is None or row["end_at"] is None:
        _release(runtime, row["id"])  # intake has not looked at it yet
        return False
    if row["end_at"] <= runtime.latest():
        _move(runtime, row, Status.EXPIRED, "window_passed", "its end passed before it could be granted")
        summary.expired.append(row["id"])
        return False
    if row["start_at"] > runtime.as_of:
        if row["status"] == Status.APPROVED:
            _move(
                runtime,
                row,
                Status.SCHEDULED,
                "start_in_future",
                f"starts at {row['start_at']:%Y-%m-%d %H:%M} UTC",
            )
        else:
            _release(runtime, row["id"])
        summary.scheduled.append(row["id"])
        return False
    try:
        verdict = check_request(runtime, row, approver=None if row["auto_approval_rule"] else row["approver"])
    except CheckUnavailable as error:
        _release(runtime, row["id"])
        summary.deferred.append((row["id"], str(error)))
        return False
    if verdict.ok and row["auto_approval_rule"] and not verdict.auto_approval_rule:
        verdict = verdict.__class__(False, "no longer covered by an auto-approval rule; ask an approver")
    if not verdict.ok:
        _move(
            runtime,
            row,
            Status.REJECTED,
            "invalid_request",
            f"checked again before granting: {verdict.reason}",
        )
        summary.rejected.append((row["id"], verdict.reason))
        return False
    return True


def _prepare(runtime: Runtime, row: queue.Row, summary: GrantSummary) -> _Grant | None:
    """Resolve ids and make sure exactly one session row exists for the request."""
    ic = runtime.identity_center
    person = runtime.policy.person(row["requester"])
    assert person is not None  # check_request passed
    try:
        permission_set = ic.permission_set(row["permission_set"])
        assert permission_set is not None
        if row["principal_group"]:
            principal_type, principal_name = "GROUP", row["principal_group"]
            principal_id = ic.group_id(principal_name)
            assert principal_id is not None
            members: list[str] | None = ic.group_member_names(principal_id)
        else:
            principal_type, principal_name = "USER", person.identity_center_user
            principal_id = ic.user_id(principal_name)
            assert principal_id is not None
            members = None
    except (ClientError, BotoCoreError) as error:
        _release(runtime, row["id"])
        summary.deferred.append((row["id"], f"Identity Center lookup failed: {error}"))
        return None
    with runtime.engine.begin() as conn:
        if queue.session_for(conn, row["id"]) is None:
            queue.create_session(
                conn,
                request_id=row["id"],
                instance_arn=ic.instance_arn,
                account_id=row["account_id"],
                permission_set_name=permission_set.name,
                permission_set_arn=permission_set.arn,
                permission_set_session_seconds=permission_set.session_seconds,
                principal_type=principal_type,
                principal_id=principal_id,
                principal_name=principal_name,
                group_members=None if members is None else json.dumps(members),
            )
    return _Grant(row, principal_type, principal_id, row["account_id"], permission_set.arn)


def _start(
    runtime: Runtime, grant: _Grant, creating: dict[tuple[str, str, str, str], str]
) -> AssignmentStatus | Outcome[_Grant]:
    ic = runtime.identity_center
    request_id = grant.row["id"]
    with runtime.engine.connect() as conn:
        session = queue.session_for(conn, request_id)
    assert session is not None
    if session["creation_request_id"] and session["creation_status"] != "FAILED":
        return AssignmentStatus(
            session["creation_request_id"], "IN_PROGRESS"
        )  # resume: a re-run never creates twice
    args = (grant.account_id, grant.permission_set_arn, grant.principal_type, grant.principal_id)
    if args in creating:
        # An overlapping request in this run is already creating the same assignment: wait for that one.
        _record_creation(runtime, request_id, AssignmentStatus(creating[args], "IN_PROGRESS"))
        return AssignmentStatus(creating[args], "IN_PROGRESS")
    with runtime.engine.connect() as conn:
        active = queue.sessions_with_status(conn, [Status.ACTIVE])
        ending = queue.sessions_with_status(conn, [Status.ENDING])
    if any(_same_assignment(other, session) and other["assignment_removed_at"] is None for other in ending):
        # An earlier session's removal of this very assignment is under way; creating now could be undone by it.
        return Outcome(
            grant,
            None,
            False,
            "waiting for an earlier session's removal of the same assignment",
            retry_later=True,
        )
    try:
        # Only when our own record says someone else holds the same assignment is a (paged) listing worth it;
        # otherwise create: Identity Center treats creating an existing assignment as a success, not a copy.
        if other_needs(session, active, runtime.policy) and ic.assignment_exists(*args):
            return Outcome(grant, None, True, "already assigned (another session or a standing assignment)")
        status = ic.start_creation(*args)
    except ClientError as error:
        if error_code(error) in ("ValidationException", "AccessDeniedException", "ResourceNotFoundException"):
            return Outcome(grant, None, False, f"CreateAccountAssignment refused: {error}")
        return Outcome(grant, None, False, str(error), retry_later=True)
    except BotoCoreError as error:
        return Outcome(grant, None, False, str(error), retry_later=True)
    if status.request_id:
        creating[args] = status.request_id
    _record_creation(runtime, request_id, status)
    return status


def _same_assignment(a: queue.Row, b: queue.Row) -> bool:
    keys = ("account_id", "permission_set_arn", "principal_type", "principal_id")
    return a["request_id"] != b["request_id"] and all(a[key] == b[key] for key in keys)


def _record_creation(runtime: Runtime, request_id: int, status: AssignmentStatus) -> None:
    """Remember the creation request before waiting on it, so a crashed or re-run task resumes it."""
    with runtime.engine.begin() as conn:
        queue.update_session(
            conn, request_id, creation_request_id=status.request_id, creation_status=status.status
        )


def _settle(runtime: Runtime, outcome: Outcome[_Grant], summary: GrantSummary) -> None:
    row = outcome.item.row
    at = (
        runtime.latest()
    )  # a replay ahead of the clock records the simulated moment; a late run, the real one
    status = outcome.status.status if outcome.status else None
    if outcome.confirmed:
        with runtime.engine.begin() as conn:  # the session and the request change together, or not at all
            queue.update_session(conn, row["id"], creation_status=status or "ALREADY_PRESENT", granted_at=at)
            queue.transition(
                conn,
                row["id"],
                expected=row["status"],
                target=Status.ACTIVE,
                reason_code="grant_confirmed",
                actor=runtime.actor,
                at=runtime.now(),
                reason=outcome.reason,
                claimed_by=None,
                claimed_until=None,
                granted_at=at,
            )
        summary.activated.append(row["id"])
        return
    reason = outcome.reason or "not confirmed"
    if outcome.retry_later:
        _release(runtime, row["id"])
        summary.deferred.append((row["id"], reason))
        return
    with runtime.engine.begin() as conn:
        queue.update_session(conn, row["id"], creation_status=status or "UNCONFIRMED", last_error=reason)
    _move(runtime, row, Status.FAILED, "grant_not_confirmed", reason)
    summary.failed.append((row["id"], reason))
    log.error("request %s: grant not confirmed: %s", row["id"], reason)
    # A creation AWS never confirmed either way may still complete: elevation_revocations removes it (and
    # fails loudly if it cannot), so no access appears that nothing tracks.
