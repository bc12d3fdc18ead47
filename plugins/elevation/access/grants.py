"""Grants: approved requests whose start has come become confirmed Identity Center account assignments.

A request turns active only when DescribeAccountAssignmentCreationStatus says SUCCEEDED. Idempotent: the session
row (unique per request) records the intent to create *before* the call and the creation request id after it, so
a retried task, or another worker once the claim lapses, resumes the same creation instead of making a second
one, and a request whose creation was ever sent ends only through that creation's confirmed outcome.

Never remove what the system did not create: before creating, the pair's assignments are listed (once per
account and permission set per run) and an assignment that already exists outside the system's own record is
recorded as pre-existing on the session; revocations keep it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime

from botocore.exceptions import BotoCoreError, ClientError

from elevation.access.checks import CheckUnavailable, check_request
from elevation.access.confirm import Outcome, PollSettings, confirm_all
from elevation.access.needs import grant_in_flight
from elevation.access.policy import Triple, standing_triples
from elevation.aws import error_code
from elevation.identity_center import AssignmentStatus
from elevation.lifecycle import Status
from elevation.runtime import Runtime
from elevation.store import queue

log = logging.getLogger(__name__)

Assignment = tuple[str, str, str, str]  # account, permission set ARN, principal type, principal id


class GrantsOverdue(RuntimeError):
    """Approved access is not being granted (AWS failing, the grant DAG not running, its pool missing)."""


@dataclass
class GrantSummary:
    activated: list[int] = field(default_factory=list)
    failed: list[tuple[int, str]] = field(default_factory=list)
    scheduled: list[int] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    rejected: list[tuple[int, str]] = field(default_factory=list)
    deferred: list[tuple[int, str]] = field(default_factory=list)  # left for the next run (AWS unavailable)
    overdue: list[tuple[int, str]] = field(default_factory=list)  # due for longer than grants.overdue_after


@dataclass
class _Grant:
    row: queue.Row
    principal_type: str
    principal_id: str
    account_id: str
    permission_set_arn: str

    @property
    def assignment(self) -> Assignment:
        return (self.account_id, self.permission_set_arn, self.principal_type, self.principal_id)


@dataclass
class _RunState:
    """What one grant run learned: its own creations, and the pairs' assignments it listed (one listing each)."""

    creating: dict[Assignment, str] = field(default_factory=dict)  # assignment -> this run's creation request
    listed: dict[tuple[str, str], set[tuple[str, str]]] = field(default_factory=dict)

    def exists(self, runtime: Runtime, assignment: Assignment) -> bool:
        account, permission_set_arn, principal_type, principal_id = assignment
        pair = (account, permission_set_arn)
        if pair not in self.listed:
            self.listed[pair] = runtime.identity_center.assignments_of_pair(account, permission_set_arn)
        return (principal_type, principal_id) in self.listed[pair]


def run_grants(runtime: Runtime) -> GrantSummary:
    """Claim approved requests a batch at a time (so parallel workers share the queue) and grant them; then fail
    loudly if any approved request has waited too long for its grant."""
    summary = GrantSummary()
    settings = PollSettings.of(runtime.policy.grants)
    seen: set[int] = set()
    state = _RunState()
    while True:
        claimed = queue.claim(
            runtime.engine,
            statuses=[Status.APPROVED, Status.SCHEDULED],
            worker=runtime.worker,
            now=runtime.now(),
            lease=runtime.lease,
            limit=settings.max_in_flight,
            skip=seen,
        )
        if not claimed:
            break
        seen.update(row["id"] for row in claimed)
        grants = [grant for grant in (_admit(runtime, row, summary) for row in claimed) if grant is not None]
        held = [grant.row["id"] for grant in grants]
        confirm_all(
            grants,
            start=lambda grant: _start(runtime, grant, state),
            describe=runtime.identity_center.creation_status,
            settings=settings,
            on_outcome=lambda outcome: _settle(runtime, outcome, summary),
            sleep=runtime.sleep,
            monotonic=runtime.monotonic,
            heartbeat=lambda held=held: queue.renew(runtime.engine, held, runtime.worker, runtime.now() + runtime.lease),
        )
    summary.overdue = overdue_grants(runtime)
    if summary.overdue:
        raise GrantsOverdue(overdue_message(runtime, summary.overdue))
    return summary


def overdue_grants(runtime: Runtime) -> list[tuple[int, str]]:
    """Approved requests due (start come, decided) for longer than `grants.overdue_after` and still not granted,
    with what their row says."""
    after = runtime.policy.grants.overdue_after
    latest = runtime.latest()
    with runtime.engine.connect() as conn:
        waiting = queue.requests_in(conn, [Status.APPROVED, Status.SCHEDULED])
    overdue = []
    for row in waiting:
        if row["validated_at"] is None or not isinstance(row["start_at"], datetime):
            continue
        due = max(row["start_at"], row["decided_at"] or row["validated_at"])
        if due + after <= latest:
            overdue.append((row["id"], row["status_reason"] or "not granted yet"))
    return overdue


def overdue_message(runtime: Runtime, overdue: list[tuple[int, str]]) -> str:
    listed = "; ".join(f"request {request_id}: {reason}" for request_id, reason in overdue[:20])
    more = f" (and {len(overdue) - 20} more)" if len(overdue) > 20 else ""
    return (
        f"{len(overdue)} approved request(s) due for more than {runtime.policy.grants.overdue_after} are not "
        f"granted: {listed}{more}. Check that elevation_grants runs (not paused, its pool exists) and what AWS "
        f"answers (elevation_event)"
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


def _admit(runtime: Runtime, row: queue.Row, summary: GrantSummary) -> _Grant | None:
    """What to do with a claimed row: grant (or resume) now, or schedule, expire, reject, leave for intake.

    One row that cannot be judged is released with a warning; the others proceed.
    """
    try:
        with runtime.engine.connect() as conn:
            session = queue.session_for(conn, row["id"])
        if session is not None and grant_in_flight(session):
            # A creation was sent: follow it to its outcome whatever the clock or the policy says now. Expiring or
            # rejecting here is what left untracked access behind when a worker died mid-grant.
            return _from_session(row, session)
        if not _ready(runtime, row, summary):
            return None
        return _prepare(runtime, row, summary)
    except Exception as error:
        log.exception("request %s could not be granted", row["id"])
        _defer(runtime, row, f"unexpected error: {type(error).__name__}: {error}", summary)
        return None


def _from_session(row: queue.Row, session: queue.Row) -> _Grant:
    return _Grant(
        row, session["principal_type"], session["principal_id"], session["account_id"], session["permission_set_arn"]
    )


def _defer(runtime: Runtime, row: queue.Row, reason: str, summary: GrantSummary) -> None:
    """Leave the request for the next run, saying why on the row and in the log (a warning: AWS failing for long
    enough makes the run fail, see overdue_grants)."""
    message = f"grant deferred: {reason}"[:1000]
    log.warning("request %s: %s", row["id"], message)
    with runtime.engine.begin() as conn:
        queue.release(conn, row["id"], runtime.worker)
        queue.update_request(conn, row["id"], status_reason=message, updated_at=runtime.now())
        queue.record_event(
            conn, at=runtime.now(), kind="warning", actor=runtime.actor, request_id=row["id"],
            detail={"message": message},
        )
    summary.deferred.append((row["id"], reason))


def _ready(runtime: Runtime, row: queue.Row, summary: GrantSummary) -> bool:
    """Grant now, or schedule, expire, reject, or leave for intake."""
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
        _defer(runtime, row, str(error), summary)
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
        _defer(runtime, row, f"Identity Center lookup failed: {error}", summary)
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


def _start(runtime: Runtime, grant: _Grant, state: _RunState) -> AssignmentStatus | Outcome[_Grant]:
    request_id = grant.row["id"]
    with runtime.engine.connect() as conn:
        session = queue.session_for(conn, request_id)
    assert session is not None
    if session["creation_request_id"] and session["creation_status"] != "FAILED":
        return AssignmentStatus(session["creation_request_id"], "IN_PROGRESS")  # resume: never create twice
    args = grant.assignment
    if args in state.creating:
        # An overlapping request in this run is already creating the same assignment: wait for that one.
        _record_creation(runtime, request_id, AssignmentStatus(state.creating[args], "IN_PROGRESS"))
        return AssignmentStatus(state.creating[args], "IN_PROGRESS")
    with runtime.engine.connect() as conn:
        ours = queue.sessions_with_status(
            conn, [Status.ACTIVE, Status.ENDING, Status.APPROVED, Status.SCHEDULED, Status.FAILED]
        )
    if any(
        _same_assignment(other, session) and other["status"] == Status.ENDING and other["assignment_removed_at"] is None
        for other in ours
    ):
        # An earlier session's removal of this very assignment is under way; creating now could be undone by it.
        return Outcome(
            grant, None, False, "waiting for an earlier session's removal of the same assignment", retry_later=True
        )
    interrupted = grant_in_flight(session)  # sent by a worker that died before recording the request id
    try:
        exists = state.exists(runtime, args)
        if exists:
            return _already_there(runtime, grant, session, ours, interrupted)
        if interrupted and grant.row["end_at"] <= runtime.latest():
            return Outcome(grant, None, False, "its grant was interrupted and its end has passed; any assignment "
                           "the interrupted creation makes is removed by elevation_revocations")
        with runtime.engine.begin() as conn:  # the intent, before the call: a crash after it leaves a trace
            queue.update_session(conn, request_id, creation_sent_at=runtime.now(), assignment_preexisted=False)
        status = runtime.identity_center.start_creation(*args)
    except ClientError as error:
        # The intent stays even now: an earlier attempt of the retried call may have been received. The next run
        # looks before creating again, and a failed grant's intent is cleaned up by elevation_revocations.
        if error_code(error) in ("ValidationException", "AccessDeniedException", "ResourceNotFoundException"):
            return Outcome(grant, None, False, f"CreateAccountAssignment refused: {error}")
        return Outcome(grant, None, False, str(error), retry_later=True)
    except BotoCoreError as error:  # no answer: the creation may or may not have been received; the intent stays
        return Outcome(grant, None, False, str(error), retry_later=True)
    if status.request_id:
        state.creating[args] = status.request_id
    _record_creation(runtime, request_id, status)
    return status


def _already_there(
    runtime: Runtime, grant: _Grant, session: queue.Row, ours: list[queue.Row], interrupted: bool
) -> Outcome[_Grant]:
    """The assignment exists. Ours (another session made it, or this one's interrupted creation did), or not:
    then it existed before the system touched it, and is never removed at this session's end."""
    holders = [
        other for other in ours
        if _same_assignment(other, session)
        and other["assignment_removed_at"] is None
        and (other["status"] in (Status.ACTIVE, Status.ENDING) or grant_in_flight(other))
    ]
    made_by_us = interrupted or any(not other["assignment_preexisted"] for other in holders)
    triple = Triple(
        session["principal_type"], session["principal_name"], session["permission_set_name"], session["account_id"]
    )
    standing = triple in standing_triples(runtime.policy)
    with runtime.engine.begin() as conn:
        queue.update_session(conn, grant.row["id"], assignment_preexisted=not made_by_us)
        if not made_by_us and not standing:
            queue.record_event(
                conn, at=runtime.now(), kind="preexisting_assignment", actor=runtime.actor,
                request_id=grant.row["id"],
                detail={"message": "the assignment already existed, not created by this system; it is kept at "
                        "the session's end (drift for a human to decide)"},
            )
    if made_by_us:
        return Outcome(grant, None, True, "already assigned (another session of this system holds it)")
    if standing:
        return Outcome(grant, None, True, "already assigned (a standing assignment)")
    log.warning("request %s: the assignment already existed outside this system; it is kept at the end", grant.row["id"])
    return Outcome(grant, None, True, "already assigned outside this system; it will be kept at the end")


def _same_assignment(a: queue.Row, b: queue.Row) -> bool:
    """Two different requests' sessions name the same assignment."""
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
        _defer(runtime, row, reason, summary)
        return
    with runtime.engine.begin() as conn:
        queue.update_session(conn, row["id"], creation_status=status or "UNCONFIRMED", last_error=reason)
    _move(runtime, row, Status.FAILED, "grant_not_confirmed", reason)
    summary.failed.append((row["id"], reason))
    log.error("request %s: grant not confirmed: %s", row["id"], reason)
    # A creation AWS never confirmed either way may still complete: elevation_revocations removes it (and
    # fails loudly if it cannot), so no access appears that nothing tracks.
