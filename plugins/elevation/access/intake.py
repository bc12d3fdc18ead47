"""Intake: validate new rows, apply approval/cancel/revoke actions, auto-approve, expire undecided requests.

Writers are not trusted: a row inserted as approved is checked like any other. Each bad row ends rejected with a
human-readable reason on the row and an event in the log; it never holds up the others.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from elevation.access.checks import CheckUnavailable, check_request, facts_of, request_window
from elevation.access.needs import grant_in_flight
from elevation.access.policy import check_approver
from elevation.identity_center import AccountNotInOrganization
from elevation.lifecycle import Status, TransitionRefused, transition_for_action
from elevation.runtime import Runtime
from elevation.store import queue
from elevation.store.tables import requests

log = logging.getLogger(__name__)


@dataclass
class IntakeSummary:
    validated: int = 0
    auto_approved: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)
    expired: list[int] = field(default_factory=list)
    actions_applied: list[tuple[int, str]] = field(default_factory=list)
    actions_refused: list[tuple[int, str]] = field(default_factory=list)


class RequestBusy(RuntimeError):
    """A grant or revocation holds the request right now; its actions wait for the next run."""


# --- the intake step ----------------------------------------------------------------------------------------


def run_intake(runtime: Runtime) -> IntakeSummary:
    """One pass: actions first (an approval may arrive with the row), then new rows, then expiry.

    Rows and actions are claimed (like grants claim theirs), so concurrent intakes never judge the same one twice,
    and judged one at a time: one that cannot be read or judged ends rejected (or refused) with the reason, and
    the others proceed.
    """
    summary = IntakeSummary()
    apply_actions(runtime, summary)
    validate_new_requests(runtime, summary)
    expire_undecided(runtime, summary)
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
            claimed_by=None,
            claimed_until=None,
            **extra,
        )
    summary.rejected.append((row["id"], reason))
    log.warning("request %s rejected: %s", row["id"], reason)


def validate_new_requests(runtime: Runtime, summary: IntakeSummary) -> None:
    claimed = queue.claim(
        runtime.engine,
        statuses=[Status.PENDING, Status.APPROVED],
        where=[requests.c.validated_at.is_(None)],
        worker=runtime.worker,
        now=runtime.now(),
        lease=runtime.lease,
    )
    for row in claimed:
        try:
            _validate(runtime, row, summary)
        except queue.StaleRequest as error:
            log.info("request %s: %s", row["id"], error)  # another intake judged it first
        except Exception as error:  # one row that cannot be judged never holds up the others
            log.exception("request %s could not be judged", row["id"])
            _reject_unjudgeable(runtime, row, f"could not be judged: {type(error).__name__}: {error}", summary)
        finally:
            with runtime.engine.begin() as conn:
                queue.release(conn, row["id"], runtime.worker)


def _reject_unjudgeable(runtime: Runtime, row: queue.Row, reason: str, summary: IntakeSummary) -> None:
    try:
        _reject(runtime, row, reason[:1000], summary)
    except Exception:  # even rejecting failed: leave a warning naming the row, and go on with the others
        log.exception("request %s could not be rejected either", row["id"])
        _warn(runtime, row["id"], f"request {row['id']} is quarantined: {reason[:1000]}")


def _validate(runtime: Runtime, row: queue.Row, summary: IntakeSummary) -> None:
    if row["client_request_id"]:
        with runtime.engine.connect() as conn:
            first = queue.earlier_request_with_client_id(
                conn, row["client_request_id"], row["id"], row["submitted_by"]
            )
        if first is not None:
            _reject(
                runtime,
                row,
                f"duplicate client_request_id {row['client_request_id']!r}: already used by request {first}",
                summary,
            )
            return
    inserted_approved = row["status"] == Status.APPROVED
    if inserted_approved and not row["approver"]:
        _reject(runtime, row, "inserted as approved without an approver", summary)
        return
    try:
        verdict = check_request(runtime, row, approver=row["approver"] if inserted_approved else None)
    except CheckUnavailable as error:
        _warn(runtime, row["id"], str(error))
        return
    if not verdict.ok:
        _reject(runtime, row, verdict.reason, summary)
        return
    window = request_window(row)
    assert not isinstance(window, str)
    at = runtime.now()
    with runtime.engine.begin() as conn:
        bookkeeping = {"validated_at": at, "end_at": window[1], "start_at": window[0]}
        if not inserted_approved and row["approver"]:
            bookkeeping["approver"] = None  # naming an approver on a pending row approves nothing

        if inserted_approved:
            queue.mark_validated(conn, row["id"], decided_by=row["approver"], decided_at=at, **bookkeeping)
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
            queue.mark_validated(conn, row["id"], **bookkeeping)
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


@dataclass
class _Decision:
    """What an action would do to its request; written together with the action's outcome, or not at all."""

    expected: Status
    target: Status
    reason_code: str
    reason: str | None
    updates: dict[str, object]


def apply_actions(runtime: Runtime, summary: IntakeSummary) -> None:
    """Approve / reject / cancel / revoke, from the action table (written by outside systems, the form, the CLI).

    Each action is claimed, then applied and its outcome written in one transaction, guarded so that it is
    written once: concurrent intakes cannot apply an action twice or overwrite its outcome.
    """
    claimed = queue.claim_actions(
        runtime.engine, worker=runtime.worker, now=runtime.now(), lease=runtime.lease
    )
    for action in claimed:
        try:
            decision = _decide_action(runtime, action)
        except (CheckUnavailable, RequestBusy) as wait:
            if isinstance(wait, CheckUnavailable):
                _warn(runtime, action["request_id"], str(wait))
            with runtime.engine.begin() as conn:
                queue.release_action(conn, action["id"], runtime.worker)
            continue  # AWS could not be asked, or a grant or revocation holds the request: the next run decides
        except Exception as error:  # an action that cannot be judged is refused with the reason; the rest proceed
            log.exception("action %s could not be judged", action["id"])
            decision = f"could not be applied: {type(error).__name__}: {error}"[:1000]
        try:
            _record_decision(runtime, action, decision, summary)
        except queue.StaleRequest as error:
            log.info("action %s: %s", action["id"], error)  # the request moved under us: decide again next run
            with runtime.engine.begin() as conn:
                queue.release_action(conn, action["id"], runtime.worker)


def _record_decision(
    runtime: Runtime, action: queue.Row, decision: _Decision | str, summary: IntakeSummary
) -> None:
    at = runtime.now()
    with runtime.engine.begin() as conn:
        if isinstance(decision, str):
            queue.finish_action(
                conn, action["id"], worker=runtime.worker, at=at, outcome="refused", reason=decision
            )
            queue.record_event(
                conn,
                at=at,
                kind="action_refused",
                actor=action["actor"],
                request_id=action["request_id"],
                detail={"action": action["action"], "action_id": action["id"], "reason": decision},
            )
        else:
            queue.finish_action(conn, action["id"], worker=runtime.worker, at=at, outcome="applied", reason=None)
            queue.transition(
                conn,
                action["request_id"],
                expected=decision.expected,
                target=decision.target,
                reason_code=decision.reason_code,
                actor=action["actor"],
                at=at,
                reason=decision.reason,
                detail={"action_id": action["id"]},
                **decision.updates,
            )
    if isinstance(decision, str):
        summary.actions_refused.append((action["id"], decision))
        log.warning("action %s (%s by %s) refused: %s", action["id"], action["action"], action["actor"], decision)
    else:
        summary.actions_applied.append((action["id"], action["action"]))


#: How much of an approver's comment is copied onto the request, which its writer may read back.
COMMENT_LIMIT = 500


def comment_for_row(comment: str | None) -> str | None:
    """An actor's comment as it may appear in `status_reason`: printable, on one line, bounded (the full text
    stays on the action row)."""
    if not comment:
        return None
    cleaned = " ".join("".join(ch if ch.isprintable() else " " for ch in comment).split())
    return cleaned if len(cleaned) <= COMMENT_LIMIT else cleaned[: COMMENT_LIMIT - 1] + "…"


def _decide_action(runtime: Runtime, action: queue.Row) -> _Decision | str:
    """What one action does to its request, or the reason it is refused. Writes nothing."""
    with runtime.engine.connect() as conn:
        row = queue.get_request(conn, action["request_id"])
        session = queue.session_for(conn, action["request_id"])
    if row is None:
        return f"there is no request {action['request_id']}"
    if row["claimed_until"] is not None and row["claimed_until"] > runtime.now():
        # Cancelling while AWS is creating the assignment would leave access nobody tracks: wait for the outcome.
        raise RequestBusy(f"request {row['id']} is being worked on by {row['claimed_by']}")
    if session is not None and grant_in_flight(session) and row["status"] in (Status.APPROVED, Status.SCHEDULED):
        raise RequestBusy(f"request {row['id']} has a grant in flight; it is decided once that grant settles")
    kind, actor_name = action["action"], action["actor"]
    try:
        target, reason_code = transition_for_action(row["status"], kind)
    except TransitionRefused as refused:
        hint = "; end it early with revoke" if kind == "cancel" and row["status"] == Status.ACTIVE else ""
        return f"{refused}{hint}"
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
    updates: dict[str, object] = {}
    reason = comment_for_row(action["comment"])
    if kind == "approve":
        verdict = check_request(runtime, row, approver=actor_name)
        if not verdict.ok:
            # The approver said yes to something policy forbids: the request itself is invalid.
            target, reason_code, reason = Status.REJECTED, "invalid_request", verdict.reason
        updates = {"decided_by": actor_name, "decided_at": at, "approver": actor_name}
    elif kind == "reject":
        updates = {"decided_by": actor_name, "decided_at": at}
    elif kind == "revoke":
        updates = {"revoke_requested_at": at, "revoke_requested_by": actor_name}
    return _Decision(Status(row["status"]), target, reason_code, reason, updates)


def _account_ous_or_raise(runtime: Runtime, account_id: str) -> list[str]:
    try:
        return runtime.identity_center.account_ous(account_id)
    except AccountNotInOrganization:
        return []  # no OU can name it; an approval is then judged by account id alone, and check_request rejects it
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
        try:
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
        except queue.StaleRequest as error:
            log.info("request %s: %s", row["id"], error)  # decided meanwhile
            continue
        summary.expired.append(row["id"])
