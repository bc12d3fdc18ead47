"""Drift: what exists in IAM Identity Center against what the system recorded. Pure: no I/O.

The reconcile job reads the actual assignments of its scope and the system's record, and hands both here:

- `unexpected`: an assignment exists and nothing expects it (a console click, a script, a forgotten test, or an
  assignment that existed before a session was granted and was kept at its end);
- `lingering`: it belonged to a session that has ended or been revoked (a lost or failed revoke);
- `missing`: an active session's or a standing assignment's assignment does not exist.

Assignments in motion (a grant or revocation under way, an `ending` session, a change recorded within the grace
period) are not drift either way, and protected principals' assignments are never unexpected or lingering.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum


class DriftKind(StrEnum):
    UNEXPECTED = "unexpected"
    LINGERING = "lingering"
    MISSING = "missing"


@dataclass(frozen=True, order=True)
class Assignment:
    """One Identity Center account assignment: (account, permission set, principal)."""

    account_id: str
    permission_set_arn: str
    principal_type: str  # USER | GROUP
    principal_id: str

    @property
    def principal(self) -> tuple[str, str]:
        return (self.principal_type, self.principal_id)


@dataclass(frozen=True, order=True)
class Drift:
    assignment: Assignment
    kind: DriftKind
    request_id: int | None  # the session it belongs (or belonged) to, if any
    detail: str

    @property
    def removable(self) -> bool:
        """What enforce mode may remove: only what nothing expects."""
        return self.kind in (DriftKind.UNEXPECTED, DriftKind.LINGERING)


@dataclass(frozen=True)
class Record:
    """What the system's own record says about the scope, as of the run."""

    standing: frozenset[Assignment]  # declared in the policy: expected, never drift
    active: Mapping[Assignment, int]  # assignment -> an active session's request id
    ended: Mapping[Assignment, int]  # assignment -> the latest ended/revoked session's request id whose it was
    preexisted: Mapping[Assignment, int]  # kept at a session's end because it existed before the system granted it
    in_motion: frozenset[Assignment]  # being created or removed right now, or changed within the grace period
    protected: frozenset[tuple[str, str]]  # (principal type, id): never unexpected or lingering, never removed


def compute_drift(actual: Iterable[Assignment], record: Record) -> list[Drift]:
    """Every drift item of the scope, sorted (the same input gives the same report)."""
    actual = frozenset(actual)
    found: list[Drift] = []
    for assignment in actual:
        if (
            assignment in record.standing
            or assignment in record.active
            or assignment in record.in_motion
            or assignment.principal in record.protected
        ):
            continue
        if assignment in record.preexisted:
            found.append(Drift(assignment, DriftKind.UNEXPECTED, record.preexisted[assignment],
                               f"existed before request {record.preexisted[assignment]} was granted, and was kept "
                               "at its end; nothing in the system expects it"))
        elif assignment in record.ended:
            found.append(Drift(assignment, DriftKind.LINGERING, record.ended[assignment],
                               f"request {record.ended[assignment]} has ended, but its assignment still exists"))
        else:
            found.append(Drift(assignment, DriftKind.UNEXPECTED, None, "not created by this system, not standing"))
    for assignment, request_id in record.active.items():
        if assignment not in actual and assignment not in record.in_motion:
            found.append(Drift(assignment, DriftKind.MISSING, request_id,
                               f"request {request_id} is active, but its assignment does not exist"))
    for assignment in record.standing:
        if assignment not in actual and assignment not in record.in_motion and assignment not in record.active:
            found.append(Drift(assignment, DriftKind.MISSING, None, "a standing assignment does not exist"))
    return sorted(found)
