"""Who else needs an assignment: the rule that keeps overlapping sessions from revoking each other early.

An assignment (principal, permission set, account) is removed only when no other active session and no
standing assignment needs it. Pure over rows and the policy; the caller reads the rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from elevation.access.policy import Policy, Triple, standing_triples


def other_needs(
    session: Mapping[str, Any], active_sessions: Iterable[Mapping[str, Any]], policy: Policy
) -> list[str]:
    """Reasons to keep `session`'s assignment, as sentences for the row and the log (empty: remove it)."""
    reasons = []
    for other in active_sessions:
        if other["request_id"] == session["request_id"]:
            continue
        same = (
            other["account_id"] == session["account_id"]
            and other["permission_set_arn"] == session["permission_set_arn"]
            and other["principal_type"] == session["principal_type"]
            and other["principal_id"] == session["principal_id"]
        )
        if same:
            reasons.append(f"request {other['request_id']} is still active until {other['end_at']}")
    triple = Triple(
        session["principal_type"],
        session["principal_name"],
        session["permission_set_name"],
        session["account_id"],
    )
    if triple in standing_triples(policy):
        reasons.append("a standing assignment in the policy keeps it")
    return reasons


def grant_in_flight(session: Mapping[str, Any]) -> bool:
    """A creation was sent to AWS for this session and AWS has not said FAILED: access may exist (or appear), so
    its request may end only through that creation's confirmed outcome and, if it succeeded, a confirmed removal.

    The intent is recorded *before* the call (`creation_sent_at`), so this holds even for a worker killed between
    sending CreateAccountAssignment and recording its request id.
    """
    return session["creation_sent_at"] is not None and session["creation_status"] != "FAILED"
