"""Revocations: sessions whose end has come, or whose early end was requested, lose their assignment, confirmed.

An assignment is deleted only when no other active session and no standing assignment needs the same
(principal, permission set, account). A revoke that fails leaves the request `ending` with an attempt count and
is retried on every run; when any session is overdue by more than the configured margin, the run fails loudly
(after doing all it can) so Airflow's failure callbacks and alerts fire.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from elevation.access.confirm import Outcome, PollSettings, confirm_all
from elevation.access.needs import grant_in_flight, other_needs
from elevation.aws import error_code
from elevation.identity_center import AssignmentStatus
from elevation.lifecycle import Status
from elevation.runtime import Runtime
from elevation.store import queue

log = logging.getLogger(__name__)
JOB = "elevation_revocations"


class RevocationOverdue(RuntimeError):
    """Access is outliving its session: somebody must look now."""


@dataclass
class RevocationSummary:
    ended: list[int] = field(default_factory=list)
    revoked: list[int] = field(default_factory=list)
    kept: list[tuple[int, str]] = field(default_factory=list)
    failing: list[tuple[int, str]] = field(default_factory=list)
    overdue: list[int] = field(default_factory=list)


def run_revocations(runtime: Runtime) -> RevocationSummary:
    summary = RevocationSummary()
    try:
        _mark_due(runtime)
        claimed = queue.claim(
            runtime.engine,
            statuses=[Status.ENDING],
            worker=runtime.worker,
            now=runtime.now(),
            lease=runtime.lease,
        )
        held = [row["id"] for row in claimed]
        settings = PollSettings.of(runtime.policy.grants)
        confirm_all(
            claimed,
            start=lambda row: _start(runtime, row),
            describe=runtime.identity_center.deletion_status,
            settings=settings,
            on_outcome=lambda outcome: _settle(runtime, outcome, summary),
            sleep=runtime.sleep,
            monotonic=runtime.monotonic,
            heartbeat=lambda: queue.renew(runtime.engine, held, runtime.worker, runtime.now() + runtime.lease),
        )
        _remove_unconfirmed_grants(runtime, settings, summary)
    except Exception as error:
        _beat(runtime, "error", {"error": str(error)[:500]})
        raise
    summary.overdue = _overdue(runtime)
    # `retrying`: a revoke keeps failing but is not overdue yet; a monitor may warn before it pages.
    outcome = "overdue" if summary.overdue else "retrying" if summary.failing else "ok"
    _beat(runtime, outcome, {"overdue": summary.overdue, "failing": summary.failing})
    if summary.overdue:
        raise RevocationOverdue(
            f"access outlives its session by more than {runtime.policy.revocation.overdue_margin} "
            f"for requests {summary.overdue}; see their status_reason and the event log"
        )
    return summary


def _beat(runtime: Runtime, outcome: str, detail: object) -> None:
    with runtime.engine.begin() as conn:
        queue.beat(conn, JOB, at=runtime.now(), as_of=runtime.as_of, outcome=outcome, detail=detail)


def _mark_due(runtime: Runtime) -> None:
    """Active sessions whose end has passed by either clock move to ending."""
    latest = runtime.latest()
    with runtime.engine.connect() as conn:
        active = queue.requests_in(conn, [Status.ACTIVE])
    for row in active:
        if row["end_at"] is not None and row["end_at"] <= latest:
            with runtime.engine.begin() as conn:
                queue.transition(
                    conn,
                    row["id"],
                    expected=Status.ACTIVE,
                    target=Status.ENDING,
                    reason_code="end_time_reached",
                    actor=runtime.actor,
                    at=runtime.now(),
                    reason=f"end time {row['end_at']:%Y-%m-%d %H:%M} UTC reached",
                )


def _start(runtime: Runtime, row: queue.Row) -> AssignmentStatus | Outcome[queue.Row]:
    with runtime.engine.connect() as conn:
        session = queue.session_for(conn, row["id"])
        active = queue.sessions_with_status(conn, [Status.ACTIVE])
        granting = queue.sessions_with_status(conn, [Status.APPROVED, Status.SCHEDULED])
    if session is None:
        return Outcome(row, None, True, "no assignment was ever made for it")
    needs = other_needs(session, active, runtime.policy)
    if needs:
        return Outcome(row, None, True, "kept: " + "; ".join(needs))
    if session["assignment_preexisted"]:
        _record_preexisting_kept(runtime, row["id"])
        return Outcome(row, None, True, f"kept: {PREEXISTING}")
    creating = [o for o in granting if grant_in_flight(o)]
    if any(o["request_id"] != row["id"] and other_needs(session, [o], runtime.policy) for o in creating):
        # Another request for the same assignment is being granted right now: removing it could undo that grant,
        # keeping it could orphan it if that grant fails. Decide on the next run, once that grant has settled.
        return Outcome(
            row, None, False, "waiting for a grant of the same assignment to settle", retry_later=True
        )
    if session["deletion_request_id"] and session["deletion_status"] not in ("FAILED", "SUCCEEDED"):
        return AssignmentStatus(session["deletion_request_id"], "IN_PROGRESS")  # resume the earlier attempt
    try:
        status = runtime.identity_center.start_deletion(*_assignment_of(session))
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException":
            return Outcome(row, None, True, "the assignment was already gone")
        return Outcome(row, None, False, f"DeleteAccountAssignment failed: {error}")
    except BotoCoreError as error:
        return Outcome(row, None, False, f"DeleteAccountAssignment failed: {error}")
    with runtime.engine.begin() as conn:
        queue.update_session(
            conn, row["id"], deletion_request_id=status.request_id, deletion_status=status.status
        )
    return status


PREEXISTING = (
    "the assignment existed before this system granted it (created outside the system), so it is not removed; "
    "a human decides whether it should exist"
)


def _record_preexisting_kept(runtime: Runtime, request_id: int) -> None:
    log.warning("request %s: %s", request_id, PREEXISTING)
    with runtime.engine.begin() as conn:
        queue.record_event(
            conn, at=runtime.now(), kind="preexisting_assignment_kept", actor=runtime.actor,
            request_id=request_id, detail={"message": PREEXISTING},
        )


def _assignment_of(session: queue.Row) -> tuple[str, str, str, str]:
    return (
        session["account_id"],
        session["permission_set_arn"],
        session["principal_type"],
        session["principal_id"],
    )


def _gone_after_all(runtime: Runtime, session: queue.Row | None) -> bool:
    """A deletion AWS reports FAILED may have failed because the assignment is already gone: look, once."""
    if session is None:
        return False
    try:
        return not runtime.identity_center.assignment_exists(*_assignment_of(session))
    except (ClientError, BotoCoreError):
        return False


def _session_of(runtime: Runtime, request_id: int) -> queue.Row | None:
    with runtime.engine.connect() as conn:
        return queue.session_for(conn, request_id)


def _settle(runtime: Runtime, outcome: Outcome[queue.Row], summary: RevocationSummary) -> None:
    row = outcome.item
    if outcome.retry_later:
        with runtime.engine.begin() as conn:
            queue.release(conn, row["id"], runtime.worker)
            queue.update_request(conn, row["id"], status_reason=outcome.reason, updated_at=runtime.now())
        return
    failed = outcome.status is not None and outcome.status.failed
    if not outcome.confirmed and failed and _gone_after_all(runtime, _session_of(runtime, row["id"])):
        outcome = Outcome(row, outcome.status, True, f"the assignment was already gone ({outcome.reason})")
    at = runtime.latest()  # as for grants: when access really ended, or the simulated moment of a replay
    early = row["revoke_requested_at"] is not None
    target = Status.REVOKED if early else Status.ENDED
    if outcome.confirmed:
        kept = (outcome.reason or "").startswith("kept: ")
        with runtime.engine.begin() as conn:
            if kept:
                queue.update_session(conn, row["id"], kept_because=outcome.reason)
            else:
                status = outcome.status.status if outcome.status else "ALREADY_ABSENT"
                queue.update_session(conn, row["id"], deletion_status=status, assignment_removed_at=at)
            queue.transition(
                conn,
                row["id"],
                expected=Status.ENDING,
                target=target,
                reason_code="assignment_kept_for_other_need" if kept else "assignment_removed",
                actor=runtime.actor,
                at=at,
                reason=outcome.reason,
                ended_at=at,
                claimed_by=None,
                claimed_until=None,
            )
        (summary.revoked if early else summary.ended).append(row["id"])
        if kept:
            summary.kept.append((row["id"], outcome.reason or ""))
        return
    attempts = (row["revoke_attempts"] or 0) + 1
    reason = f"revoke attempt {attempts} failed: {outcome.reason}"
    with runtime.engine.begin() as conn:
        final_status = outcome.status.status if outcome.status else None
        session_updates: dict[str, object] = {"last_error": outcome.reason}
        if final_status == "FAILED":
            session_updates["deletion_status"] = "FAILED"  # start a new deletion next time
        if queue.session_for(conn, row["id"]) is not None:
            queue.update_session(conn, row["id"], **session_updates)
        queue.update_request(
            conn,
            row["id"],
            revoke_attempts=attempts,
            status_reason=reason,
            updated_at=at,
            claimed_by=None,
            claimed_until=None,
        )
        queue.record_event(
            conn,
            at=at,
            kind="revoke_failed",
            actor=runtime.actor,
            request_id=row["id"],
            detail={"attempt": attempts, "reason": outcome.reason},
        )
    summary.failing.append((row["id"], reason))
    log.error("request %s: %s", row["id"], reason)


def _unconfirmed_grants(runtime: Runtime) -> list[queue.Row]:
    """Sessions of requests that ended without being granted (failed, or ended some other way) whose creation was
    sent and never reported FAILED: it may have completed after the grant gave up, or after its worker died."""
    with runtime.engine.connect() as conn:
        ended = queue.sessions_with_status(
            conn, [Status.FAILED, Status.EXPIRED, Status.REJECTED, Status.CANCELLED]
        )
    return [
        session
        for session in ended
        if (session["creation_sent_at"] is not None or session["creation_request_id"])
        and session["creation_status"] != "FAILED"
        and session["assignment_removed_at"] is None
        and not session["kept_because"]
        and not session["assignment_preexisted"]
    ]


def _remove_unconfirmed_grants(runtime: Runtime, settings: PollSettings, summary: RevocationSummary) -> None:
    """Remove what a failed (unconfirmed) grant may have left, unless something else needs that assignment."""
    with runtime.engine.connect() as conn:
        active = queue.sessions_with_status(conn, [Status.ACTIVE])

    def start(session: queue.Row) -> AssignmentStatus | Outcome[queue.Row]:
        needs = other_needs(session, active, runtime.policy)
        if needs:
            return Outcome(session, None, True, "kept: " + "; ".join(needs))
        try:
            status = runtime.identity_center.start_deletion(*_assignment_of(session))
        except ClientError as error:
            if error_code(error) == "ResourceNotFoundException":
                if _creation_may_still_land(runtime, session):
                    return Outcome(session, None, False, "absent for now, but its creation may still complete",
                                   retry_later=True)
                return Outcome(session, None, True, "it was never created")
            return Outcome(session, None, False, f"DeleteAccountAssignment failed: {error}")
        except BotoCoreError as error:
            return Outcome(session, None, False, f"DeleteAccountAssignment failed: {error}")
        return status

    def settle(outcome: Outcome[queue.Row]) -> None:
        session = outcome.item
        if outcome.retry_later:
            return  # looked at again on the next run
        if not outcome.confirmed and outcome.status is not None and outcome.status.failed:
            still_there = not _gone_after_all(runtime, session)
            outcome = (
                outcome if still_there else Outcome(session, outcome.status, True, "it was already gone")
            )
        with runtime.engine.begin() as conn:
            if outcome.confirmed and (outcome.reason or "").startswith("kept: "):
                queue.update_session(conn, session["request_id"], kept_because=outcome.reason)
            elif outcome.confirmed:
                queue.update_session(
                    conn,
                    session["request_id"],
                    assignment_removed_at=runtime.latest(),
                    deletion_status=outcome.status.status if outcome.status else "ABSENT",
                )
            else:
                queue.update_session(conn, session["request_id"], last_error=outcome.reason)
                summary.failing.append(
                    (session["request_id"], f"cleanup of an unconfirmed grant: {outcome.reason}")
                )
            queue.record_event(
                conn,
                at=runtime.now(),
                kind="cleanup",
                actor=runtime.actor,
                request_id=session["request_id"],
                detail={"removed": outcome.confirmed, "reason": outcome.reason},
            )

    confirm_all(
        _unconfirmed_grants(runtime),
        start=start,
        describe=runtime.identity_center.deletion_status,
        settings=settings,
        on_outcome=settle,
        sleep=runtime.sleep,
        monotonic=runtime.monotonic,
    )


def _creation_may_still_land(runtime: Runtime, session: queue.Row) -> bool:
    """A creation whose request id was never recorded (its worker died) cannot be polled: absence proves nothing
    until it is older than the bound within which AWS settles creations."""
    sent = session["creation_sent_at"]
    return (
        not session["creation_request_id"]
        and sent is not None
        and sent + runtime.policy.grants.status_wait_bound > runtime.now()
    )


def _overdue(runtime: Runtime) -> list[int]:
    """Requests whose access should be gone by more than the margin but is not (or not confirmed to be)."""
    margin = runtime.policy.revocation.overdue_margin
    latest = runtime.latest()
    with runtime.engine.connect() as conn:
        open_rows = queue.requests_in(conn, [Status.ACTIVE, Status.ENDING])
    overdue = []
    for row in open_rows:
        due = row["end_at"]
        if row["revoke_requested_at"] is not None and (due is None or row["revoke_requested_at"] < due):
            due = row["revoke_requested_at"]
        if due is not None and due + margin <= latest:
            overdue.append(row["id"])
    for session in _unconfirmed_grants(
        runtime
    ):  # possible access from a grant we gave up on, not yet removed
        with runtime.engine.connect() as conn:
            request = queue.get_request(conn, session["request_id"])
        if request is not None and (request["updated_at"] or latest) + margin <= latest:
            overdue.append(session["request_id"])
    return overdue
