"""The request lifecycle: states, the one table of allowed transitions, and the reason codes.

Every path that changes a request (the queue processor, the trigger form, the command line, approval actions
written to the table) goes through :func:`check_transition`; the store refuses anything this table does not
allow. Pure: no I/O, so it is tested exhaustively.
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"  # waiting for an approver
    APPROVED = "approved"  # approved (or auto-approved), not yet processed
    SCHEDULED = "scheduled"  # approved and valid, start in the future
    ACTIVE = "active"  # assignment created and confirmed
    ENDING = "ending"  # revocation due or in progress; stays here while a revoke keeps failing
    ENDED = "ended"  # assignment removed (or kept for another need) at the planned end
    REVOKED = "revoked"  # ended early on request
    REJECTED = "rejected"  # by an approver, or by validation
    CANCELLED = "cancelled"  # by the requester before it started
    EXPIRED = "expired"  # not decided in time, or its window passed before it could start
    FAILED = "failed"  # a grant that AWS did not confirm


TERMINAL: frozenset[Status] = frozenset(
    {Status.ENDED, Status.REVOKED, Status.REJECTED, Status.CANCELLED, Status.EXPIRED, Status.FAILED}
)

#: The whole state machine. (from, to) -> the reason codes that may accompany that transition.
TRANSITIONS: dict[tuple[Status, Status], frozenset[str]] = {
    (Status.PENDING, Status.APPROVED): frozenset({"approved_by_approver", "auto_approved"}),
    (Status.PENDING, Status.REJECTED): frozenset({"rejected_by_approver", "invalid_request"}),
    (Status.PENDING, Status.CANCELLED): frozenset({"cancelled_by_requester"}),
    (Status.PENDING, Status.EXPIRED): frozenset({"not_decided_in_time", "window_passed"}),
    (Status.APPROVED, Status.SCHEDULED): frozenset({"start_in_future"}),
    (Status.APPROVED, Status.ACTIVE): frozenset({"grant_confirmed"}),
    (Status.APPROVED, Status.FAILED): frozenset({"grant_not_confirmed"}),
    (Status.APPROVED, Status.REJECTED): frozenset({"invalid_request"}),
    (Status.APPROVED, Status.CANCELLED): frozenset({"cancelled_by_requester"}),
    (Status.APPROVED, Status.EXPIRED): frozenset({"window_passed"}),
    (Status.SCHEDULED, Status.ACTIVE): frozenset({"grant_confirmed"}),
    (Status.SCHEDULED, Status.FAILED): frozenset({"grant_not_confirmed"}),
    (Status.SCHEDULED, Status.REJECTED): frozenset({"invalid_request"}),
    (Status.SCHEDULED, Status.CANCELLED): frozenset({"cancelled_by_requester"}),
    (Status.SCHEDULED, Status.EXPIRED): frozenset({"window_passed"}),
    (Status.ACTIVE, Status.ENDING): frozenset({"end_time_reached", "revocation_requested"}),
    (Status.ENDING, Status.ENDED): frozenset({"assignment_removed", "assignment_kept_for_other_need"}),
    (Status.ENDING, Status.REVOKED): frozenset({"assignment_removed", "assignment_kept_for_other_need"}),
}

#: What an actor can ask for through an action row (or the form, or the command line), and from which states.
ACTIONS: dict[str, dict[Status, tuple[Status, str]]] = {
    "approve": {Status.PENDING: (Status.APPROVED, "approved_by_approver")},
    "reject": {Status.PENDING: (Status.REJECTED, "rejected_by_approver")},
    "cancel": {
        Status.PENDING: (Status.CANCELLED, "cancelled_by_requester"),
        Status.APPROVED: (Status.CANCELLED, "cancelled_by_requester"),
        Status.SCHEDULED: (Status.CANCELLED, "cancelled_by_requester"),
    },
    "revoke": {Status.ACTIVE: (Status.ENDING, "revocation_requested")},
}


class TransitionRefused(ValueError):
    """A change the state machine does not allow; the message says which and why."""


def check_transition(current: Status | str, target: Status | str, reason_code: str) -> None:
    """Raise :class:`TransitionRefused` unless ``current -> target`` with ``reason_code`` is in the table."""
    current, target = Status(current), Status(target)
    allowed = TRANSITIONS.get((current, target))
    if allowed is None:
        raise TransitionRefused(f"a request cannot go from {current} to {target}")
    if reason_code not in allowed:
        raise TransitionRefused(
            f"{current} -> {target} needs one of the reasons {sorted(allowed)}, not {reason_code!r}"
        )


def transition_for_action(current: Status | str, action: str) -> tuple[Status, str]:
    """The (target, reason code) an action leads to from ``current``, or :class:`TransitionRefused`."""
    by_state = ACTIONS.get(action)
    if by_state is None:
        raise TransitionRefused(f"unknown action {action!r}; known: {sorted(ACTIONS)}")
    current = Status(current)
    if current not in by_state:
        raise TransitionRefused(f"cannot {action} a request that is {current}")
    return by_state[current]


def transition_table_markdown() -> str:
    """The table as the README shows it (a test keeps the README in step with the code)."""
    lines = ["| from | to | reason codes |", "|---|---|---|"]
    for (source, target), reasons in TRANSITIONS.items():
        lines.append(f"| {source} | {target} | {', '.join(sorted(reasons))} |")
    return "\n".join(lines)
