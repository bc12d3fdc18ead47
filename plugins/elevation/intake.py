"""Intake: validate new rows, apply approval/cancel/revoke actions, auto-approve, expire undecided requests.

Writers are not trusted: a row inserted as approved is checked like any other. Each bad row ends rejected with a
human-readable reason on the row and an event in the log; it never holds up the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError

from elevation.identity_center import IdentityCenterError
from elevation.lifecycle import Status, TransitionRefused, transition_for_action
from elevation.policy import RequestFacts, Verdict, basic_problem, check_approver, evaluate_request
from elevation.runtime import Runtime
from elevation.store import queue
from elevation.store.database import UnreadableTime

log = logging.getLogger(__name__)


@dataclass
class IntakeSummary:
    validated: int = 0
    auto_approved: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    actions_applied: list[tuple[int, str]] = field(default_factory=list)
    actions_refused: list[tuple[int, str]] = field(default_factory=list)


class CheckUnavailable(RuntimeError):
    """Identity Center could not be asked; the request is left as it is and checked again on the next run."""


class RequestBusy(RuntimeError):
    """A grant or revocation holds the request right now; its actions wait for the next run."""


def request_window(row: queue.Row) -> tuple[datetime, datetime] | str:
    """(start, end) of the request, or the problem with its times (start defaults to when it was inserted)."""
    if isinstance(row["created_at"], UnreadableTime):
        return (
            f"created_at {row['created_at'].raw!r} is not a valid time (leave it to the database's default)"
        )
    start = row["start_at"] if row["start_at"] is not None else row["created_at"]
    if isinstance(start, UnreadableTime):
        return f"start_at {start.raw!r} is not a valid time (use ISO 8601, UTC)"
    duration = row["duration_minutes"]
    if not isinstance(duration, int):
        return f"duration_minutes {duration!r} is not a whole number"
    return start, start + timedelta(minutes=duration)


def facts_of(row: queue.Row, start: datetime, approver: str | None) -> RequestFacts:
    return RequestFacts(
        requester=row["requester"],
        account_id=str(row["account_id"]),
        permission_set=row["permission_set"],
        principal_group=row["principal_group"],
        start_at=start,
        duration=timedelta(minutes=row["duration_minutes"]),
        justification=row["justification"],
        ticket=row["ticket"],
        approver=approver,
    )


def check_request(runtime: Runtime, row: queue.Row, *, approver: str | None) -> Verdict:
    """Policy and directory checks for one request: the same at intake, at approval and right before granting."""
    window = request_window(row)
    if isinstance(window, str):
        return Verdict(False, window)
    start, _ = window
    facts = facts_of(row, start, approver)
    policy = runtime.policy
    # Checks on the row's face first: a hostile or broken row costs no API call.
    problem = basic_problem(policy, facts, runtime.latest())
    if problem:
        return Verdict(False, problem)
    try:
        directory_problem, groups, ous = _directory_facts(runtime, facts)
    except (ClientError, BotoCoreError, IdentityCenterError) as error:
        raise CheckUnavailable(
            f"could not check request {row['id']} against Identity Center: {error}"
        ) from error
    if directory_problem:
        return Verdict(False, directory_problem)
    return evaluate_request(policy, facts, requester_groups=groups, account_ous=ous, now=runtime.latest())


def _directory_facts(runtime: Runtime, facts: RequestFacts) -> tuple[str | None, list[str], list[str]]:
    policy = runtime.policy
    ic = runtime.identity_center
    person = policy.person(facts.requester)
    assert person is not None  # checked by the pure pass
    if facts.account_id == ic.management_account_id:
        return (
            f"account {facts.account_id} is the organization's management account and can never be requested",
            [],
            [],
        )
    user_id = ic.user_id(person.identity_center_user)
    if user_id is None:
        return (
            f"Identity Center user {person.identity_center_user!r} (for {person.login}) does not exist",
            [],
            [],
        )
    if ic.permission_set(facts.permission_set) is None:
        return f"permission set {facts.permission_set!r} does not exist in Identity Center", [], []
    if facts.principal_group is not None and ic.group_id(facts.principal_group) is None:
        return f"group {facts.principal_group!r} does not exist in Identity Center", [], []
    return None, ic.groups_of_user(user_id), ic.account_ous(facts.account_id)


# --- the intake step ----------------------------------------------------------------------------------------


def run_intake(runtime: Runtime) -> IntakeSummary:
    """One pass: actions first (an approval may arrive with the row), then new rows, then expiry."""
    summary = IntakeSummary()
    for step in (apply_actions, validate_new_requests, expire_undecided):
        try:
            step(runtime, summary)
        except queue.StaleRequest as error:
            # Another intake (a form run, say) moved a row first; the rest of this step waits for the next run.
            log.info("%s: %s", step.__name__, error)
    return summary


def _reject(
    runtime: Runtime, row: queue.Row, reason: str, summary: IntakeSummary, *, validated: bool = True
) -> None:
    at = runtime.now()
    extra = {"validated_at": at} if validated else {}
    with runtime.engine.begin() as conn:
        queue.transition(
            conn,
            row["id"],
            expected=row["status"],
            target=Status.REJECTED,
            reason_code="invalid_request",
            actor=runtime.actor,
            at=at,
            reason=reason,
            **extra,
        )
    summary.rejected.append((row["id"], reason))
    log.warning("request %s rejected: %s", row["id"], reason)


def validate_new_requests(runtime: Runtime, summary: IntakeSummary) -> None:
    with runtime.engine.connect() as conn:
        rows = queue.unvalidated_requests(conn)
    for row in rows:
        if row["status"] not in (Status.PENDING, Status.APPROVED):
            continue  # made by an older version or by hand; nothing to validate
        if row["client_request_id"]:
            with runtime.engine.connect() as conn:
                first = queue.earlier_request_with_client_id(conn, row["client_request_id"], row["id"])
            if first is not None:
                _reject(
                    runtime,
                    row,
                    f"duplicate client_request_id {row['client_request_id']!r}: already used by request {first}",
                    summary,
                )
                continue
        inserted_approved = row["status"] == Status.APPROVED
        if inserted_approved and not row["approver"]:
            _reject(runtime, row, "inserted as approved without an approver", summary)
            continue
        try:
            verdict = check_request(runtime, row, approver=row["approver"] if inserted_approved else None)
        except CheckUnavailable as error:
            _warn(runtime, row["id"], str(error))
            continue
        if not verdict.ok:
            _reject(runtime, row, verdict.reason, summary)
            continue
        window = request_window(row)
        assert not isinstance(window, str)
        at = runtime.now()
        with runtime.engine.begin() as conn:
            bookkeeping = {"validated_at": at, "end_at": window[1], "start_at": window[0]}
            if not inserted_approved and row["approver"]:
                bookkeeping["approver"] = None  # naming an approver on a pending row approves nothing

            if inserted_approved:
                queue.update_request(
                    conn, row["id"], decided_by=row["approver"], decided_at=at, **bookkeeping
                )
                queue.record_event(
                    conn,
                    at=at,
                    kind="validated",
                    actor=runtime.actor,
                    request_id=row["id"],
                    detail={"approved_by": row["approver"]},
                )
            elif verdict.auto_approval_rule:
                queue.transition(
                    conn,
                    row["id"],
                    expected=Status.PENDING,
                    target=Status.APPROVED,
                    reason_code="auto_approved",
                    actor=runtime.actor,
                    at=at,
                    reason=f"no approval needed under rule {verdict.auto_approval_rule!r}",
                    decided_by=f"policy:{verdict.auto_approval_rule}",
                    decided_at=at,
                    auto_approval_rule=verdict.auto_approval_rule,
                    **bookkeeping,
                )
                summary.auto_approved += 1
            else:
                queue.update_request(conn, row["id"], **bookkeeping)
                queue.record_event(conn, at=at, kind="validated", actor=runtime.actor, request_id=row["id"])
        summary.validated += 1


def _warn(runtime: Runtime, request_id: int | None, message: str) -> None:
    log.warning(message)
    with runtime.engine.begin() as conn:
        queue.record_event(
            conn,
            at=runtime.now(),
            kind="warning",
            actor=runtime.actor,
            request_id=request_id,
            detail={"message": message},
        )


def apply_actions(runtime: Runtime, summary: IntakeSummary) -> None:
    """Approve / reject / cancel / revoke, from the action table (written by outside systems, the form, the CLI)."""
    with runtime.engine.connect() as conn:
        pending = queue.unprocessed_actions(conn)
    for action in pending:
        try:
            outcome = _apply_action(runtime, action)
        except CheckUnavailable as error:
            _warn(runtime, action["request_id"], str(error))
            continue
        except (RequestBusy, queue.StaleRequest):
            continue  # a grant or revocation is acting on it, or another intake moved it: next run decides
        with runtime.engine.begin() as conn:
            if outcome is None:
                queue.finish_action(conn, action["id"], at=runtime.now(), outcome="applied", reason=None)
                summary.actions_applied.append((action["id"], action["action"]))
            else:
                queue.finish_action(conn, action["id"], at=runtime.now(), outcome="refused", reason=outcome)
                queue.record_event(
                    conn,
                    at=runtime.now(),
                    kind="action_refused",
                    actor=action["actor"],
                    request_id=action["request_id"],
                    detail={"action": action["action"], "reason": outcome},
                )
                summary.actions_refused.append((action["id"], outcome))


def _apply_action(runtime: Runtime, action: queue.Row) -> str | None:
    """Apply one action; the reason it was refused, or None when applied."""
    with runtime.engine.connect() as conn:
        row = queue.get_request(conn, action["request_id"])
    if row is None:
        return f"there is no request {action['request_id']}"
    if row["claimed_until"] is not None and row["claimed_until"] > runtime.now():
        # Cancelling while AWS is creating the assignment would leave access nobody tracks: wait for the outcome.
        raise RequestBusy(f"request {row['id']} is being worked on by {row['claimed_by']}")
    kind, actor_name = action["action"], action["actor"]
    try:
        target, reason_code = transition_for_action(row["status"], kind)
    except TransitionRefused as refused:
        return str(refused)
    policy = runtime.policy
    actor = policy.person(actor_name)
    requester = policy.person(row["requester"])
    window = request_window(row)
    if isinstance(window, str):
        return window
    facts = facts_of(row, window[0], actor_name)
    is_requester = actor is not None and requester is not None and actor.login == requester.login
    if kind in ("approve", "reject"):
        if actor is None:
            return f"{actor_name!r} is not a known person in the policy"
        ous = _account_ous_or_raise(runtime, facts.account_id)
        problem = check_approver(policy, facts, ous)
        if problem:
            return problem
    elif kind == "cancel" and not is_requester:
        return "only the requester can cancel a request"
    elif kind == "revoke" and not is_requester:
        ous = _account_ous_or_raise(runtime, facts.account_id)
        if actor is None or check_approver(policy, facts, ous):
            return "only the requester or an approver for the account can end a session early"

    at = runtime.now()
    extra: dict[str, object] = {}
    reason = action["comment"]
    if kind == "approve":
        verdict = check_request(runtime, row, approver=actor_name)
        if not verdict.ok:
            # The approver said yes to something policy forbids: the request itself is invalid.
            target, reason_code, reason = Status.REJECTED, "invalid_request", verdict.reason
        extra = {"decided_by": actor_name, "decided_at": at, "approver": actor_name}
    elif kind == "reject":
        extra = {"decided_by": actor_name, "decided_at": at}
    elif kind == "revoke":
        extra = {"revoke_requested_at": at, "revoke_requested_by": actor_name}
    with runtime.engine.begin() as conn:
        queue.transition(
            conn,
            row["id"],
            expected=row["status"],
            target=target,
            reason_code=reason_code,
            actor=actor_name,
            at=at,
            reason=reason,
            detail={"action_id": action["id"]},
            **extra,
        )
    return None


def _account_ous_or_raise(runtime: Runtime, account_id: str) -> list[str]:
    try:
        return runtime.identity_center.account_ous(account_id)
    except (ClientError, BotoCoreError) as error:
        raise CheckUnavailable(f"could not read the OUs of account {account_id}: {error}") from error


def expire_undecided(runtime: Runtime, summary: IntakeSummary) -> None:
    """Pending too long without a decision, or pending past its own window: expired."""
    expiry = runtime.policy.limits.request_expiry
    with runtime.engine.connect() as conn:
        pending = queue.requests_in(conn, [Status.PENDING])
    for row in pending:
        created = row["created_at"]
        window = request_window(row)
        if isinstance(window, str):
            continue  # rejected at validation
        if window[1] <= runtime.latest():
            code, reason = "window_passed", "the requested window passed before anyone decided"
        elif created + expiry <= runtime.as_of:
            code, reason = "not_decided_in_time", f"not decided within {expiry}"
        else:
            continue
        with runtime.engine.begin() as conn:
            queue.transition(
                conn,
                row["id"],
                expected=Status.PENDING,
                target=Status.EXPIRED,
                reason_code=code,
                actor=runtime.actor,
                at=runtime.now(),
                reason=reason,
            )
        summary.expired.append(row["id"])
