"""Reconcile: read what exists in IAM Identity Center within the configured scope, compare it with the system's
record, record the drift, and (in enforce mode) remove what nothing expects, each removal confirmed.

As few calls as the APIs allow: which accounts each managed permission set is provisioned to (or, when there are
fewer accounts than permission sets, which permission sets each account has), then ListAccountAssignments only for
the provisioned pairs, every page followed; calls are paced under Identity Center's shared rate and throttling is
retried by the one retry policy (elevation.aws). Nothing outside the scope is listed or touched.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

from botocore.exceptions import BotoCoreError, ClientError

from elevation.access.confirm import Outcome, PollSettings, confirm_all
from elevation.access.drift import Assignment, Drift, DriftKind, Record, compute_drift
from elevation.access.needs import grant_in_flight
from elevation.aws import error_code
from elevation.config import ENV_VAR
from elevation.identity_center import AssignmentStatus, IdentityCenter
from elevation.lifecycle import Status
from elevation.runtime import Runtime
from elevation.store import drift as drift_store
from elevation.store import queue

log = logging.getLogger(__name__)

TERMINAL_WITH_ACCESS_HISTORY = (Status.ENDED, Status.REVOKED, Status.FAILED, Status.EXPIRED, Status.CANCELLED,
                                Status.REJECTED)


class ScopeError(ValueError):
    """The configured scope names something that does not exist; the message names the file and the field."""


class ReconcileRefused(RuntimeError):
    """Enforce mode would remove more than the safety limit allows: nothing was removed."""


@dataclass(frozen=True)
class Scope:
    accounts: frozenset[str]
    permission_sets: dict[str, str]  # ARN -> name

    def covers(self, assignment: Assignment) -> bool:
        return assignment.account_id in self.accounts and assignment.permission_set_arn in self.permission_sets


@dataclass
class ReconcileSummary:
    mode: str
    as_of: datetime
    accounts: int = 0
    permission_sets: int = 0
    pairs_listed: int = 0
    assignments_seen: int = 0
    drift: list[Drift] = field(default_factory=list)
    opened: int = 0
    resolved: int = 0
    removed: list[Drift] = field(default_factory=list)
    recreated: list[Drift] = field(default_factory=list)
    failed: list[tuple[Drift, str]] = field(default_factory=list)
    refused: str | None = None  # the safety limit's message, when it held
    calls: Counter[str] = field(default_factory=Counter)
    names: drift_store.Names = field(default_factory=lambda: drift_store.Names({}, {}))


def run_reconcile(runtime: Runtime) -> ReconcileSummary:
    """One reconcile run as of the runtime's time; raises ReconcileRefused (after recording and reporting) when
    enforce mode would exceed its safety limit."""
    settings = runtime.config.reconcile
    summary = ReconcileSummary(mode=settings.mode, as_of=runtime.as_of)
    if not settings.has_scope:
        log.warning("reconcile has no scope (reconcile.accounts and reconcile.ous are empty): nothing is read")
        return summary
    ic = runtime.identity_center
    before = Counter(ic.calls)
    scope = resolve_scope(runtime)
    summary.accounts, summary.permission_sets = len(scope.accounts), len(scope.permission_sets)
    actual, summary.pairs_listed = read_actual(ic, scope)
    summary.assignments_seen = len(actual)
    record, names = read_record(runtime, scope)
    summary.drift = compute_drift(actual, record)
    summary.names = _names(ic, summary.drift, names, scope)
    at = runtime.now()
    with runtime.engine.begin() as conn:
        opened, _, resolved = drift_store.record_run(conn, summary.drift, summary.names, at=at)
        summary.opened, summary.resolved = len(opened), len(resolved)
        opened_keys = {drift_store.key_of(item) for item in summary.drift} if opened else set()
        for item in summary.drift:
            if item.kind is DriftKind.MISSING and item.request_id and drift_store.key_of(item) in opened_keys:
                queue.record_event(conn, at=at, kind="assignment_missing", actor=runtime.actor,
                                   request_id=item.request_id, detail={"message": item.detail})
    if settings.mode == "enforce":
        _enforce(runtime, summary)
    summary.calls = ic.calls - before
    log.info("reconcile (%s): %d accounts x %d permission sets, %d pairs listed, %d assignments, %d drift items "
             "(%d new, %d resolved), %d removed, %d recreated; calls: %s", summary.mode, summary.accounts,
             summary.permission_sets, summary.pairs_listed, summary.assignments_seen, len(summary.drift),
             summary.opened, summary.resolved, len(summary.removed), len(summary.recreated),
             dict(summary.calls))
    return summary


def _config_field(name: str) -> str:
    return f"{os.environ.get(ENV_VAR, 'the configuration')}: reconcile.{name}"


def resolve_scope(runtime: Runtime) -> Scope:
    """The accounts (listed, and below the listed OUs) and the permission sets (ARN -> name) reconcile manages."""
    settings, ic = runtime.config.reconcile, runtime.identity_center
    accounts = set(settings.accounts)
    for index, ou in enumerate(settings.ous):
        try:
            accounts.update(ic.accounts_under(ou))
        except ClientError as error:
            if error_code(error) in ("ParentNotFoundException", "InvalidInputException"):
                raise ScopeError(f"{_config_field(f'ous.{index}')}: {ou} is not in the organization") from error
            raise
    names = settings.permission_sets or tuple(sorted(
        {name for rule in (*runtime.policy.eligibility, *runtime.policy.auto_approval) for name in rule.permission_sets}
    ))
    permission_sets = {}
    for index, name in enumerate(names):
        found = ic.permission_set(name)
        if found is None:
            where = f"permission_sets.{index}" if settings.permission_sets else "permission_sets (from the policy)"
            raise ScopeError(f"{_config_field(where)}: permission set {name!r} does not exist in Identity Center")
        permission_sets[found.arn] = found.name
    return Scope(frozenset(accounts), permission_sets)


def read_actual(ic: IdentityCenter, scope: Scope) -> tuple[set[Assignment], int]:
    """Every user and group assignment of the scope, and how many (account, permission set) pairs were listed."""
    if len(scope.permission_sets) <= len(scope.accounts):
        pairs = {
            (account, arn)
            for arn in scope.permission_sets
            for account in ic.accounts_provisioned_with(arn)
            if account in scope.accounts
        }
    else:
        pairs = {
            (account, arn)
            for account in scope.accounts
            for arn in ic.permission_sets_provisioned_to(account)
            if arn in scope.permission_sets
        }
    actual = {
        Assignment(account, arn, principal_type, principal_id)
        for account, arn in sorted(pairs)
        for principal_type, principal_id in ic.assignments_of_pair(account, arn)
    }
    return actual, len(pairs)


def read_record(runtime: Runtime, scope: Scope) -> tuple[Record, dict[tuple[str, str], str]]:
    """What the system recorded about the scope, and the principal names its sessions know."""
    settings, ic = runtime.config.reconcile, runtime.identity_center
    now, grace = runtime.now(), settings.grace_period
    # Grants and removals are recorded at runtime.latest() (a replay ahead of the clock records its simulated
    # moment): "recent" is measured on the same clock, or a simulated day's sessions stay in motion for hours.
    latest = runtime.latest()
    with runtime.engine.connect() as conn:
        sessions = queue.sessions_with_status(conn, list(Status))
        claimed = {row["id"] for row in queue.requests_in(conn, list(Status))
                   if row["claimed_until"] is not None and row["claimed_until"] > now}
    active: dict[Assignment, int] = {}
    ended: dict[Assignment, int] = {}
    preexisted: dict[Assignment, int] = {}
    in_motion: set[Assignment] = set()
    names: dict[tuple[str, str], str] = {}
    for session in sessions:  # in request order: a later session's story wins
        assignment = Assignment(session["account_id"], session["permission_set_arn"], session["principal_type"],
                                session["principal_id"])
        if not scope.covers(assignment):
            continue
        names[assignment.principal] = session["principal_name"]
        status, request_id = Status(session["status"]), session["request_id"]
        recent = any(
            isinstance(moment, datetime) and moment + grace > latest
            for moment in (session["granted_at"], session["assignment_removed_at"], session["creation_sent_at"])
        )
        cleanup_pending = (status is Status.FAILED and grant_in_flight(session)
                           and session["assignment_removed_at"] is None and not session["kept_because"])
        if (recent or request_id in claimed or status is Status.ENDING or cleanup_pending
                or (status in (Status.APPROVED, Status.SCHEDULED) and grant_in_flight(session))):
            in_motion.add(assignment)
        if status is Status.ACTIVE:
            active[assignment] = request_id
        elif status in TERMINAL_WITH_ACCESS_HISTORY and (session["creation_sent_at"] or session["granted_at"]
                                                          or session["creation_request_id"]):
            target, other = (preexisted, ended) if session["assignment_preexisted"] else (ended, preexisted)
            target[assignment] = request_id
            other.pop(assignment, None)
    standing = set()
    for triple in _standing(runtime):
        principal_id = ic.user_id(triple.principal_name) if triple.principal_type == "USER" else ic.group_id(
            triple.principal_name)
        permission_set = ic.permission_set(triple.permission_set)
        if principal_id is None or permission_set is None:
            log.warning("standing assignment %s names something Identity Center does not have", triple)
            continue
        assignment = Assignment(triple.account_id, permission_set.arn, triple.principal_type, principal_id)
        if scope.covers(assignment):
            standing.add(assignment)
            names[assignment.principal] = triple.principal_name
    protected = set()
    for user in settings.protected.users:
        if (user_id := ic.user_id(user)) is not None:
            protected.add(("USER", user_id))
    for group in settings.protected.groups:
        if (group_id := ic.group_id(group)) is not None:
            protected.add(("GROUP", group_id))
    record = Record(frozenset(standing), active, ended, preexisted, frozenset(in_motion), frozenset(protected))
    return record, names


def _standing(runtime: Runtime):  # noqa: ANN202
    from elevation.access.policy import standing_triples

    return sorted(standing_triples(runtime.policy), key=str)


def _names(ic: IdentityCenter, found: list[Drift], known: dict[tuple[str, str], str], scope: Scope
           ) -> drift_store.Names:
    principals = dict(known)
    for item in found:
        if item.assignment.principal not in principals:
            principals[item.assignment.principal] = ic.principal_name(*item.assignment.principal)
    return drift_store.Names(principals, scope.permission_sets)


# --- enforce ------------------------------------------------------------------------------------------------


def _enforce(runtime: Runtime, summary: ReconcileSummary) -> None:
    settings = runtime.config.reconcile
    removable = [item for item in summary.drift if item.removable]
    if len(removable) > settings.max_removals:
        listed = "; ".join(describe(item, summary.names) for item in removable)
        summary.refused = (
            f"enforce would remove {len(removable)} assignments, more than reconcile.max_removals "
            f"({settings.max_removals}): nothing was removed; the items stay recorded. Would remove: {listed}"
        )
        return
    poll = PollSettings.of(runtime.policy.grants)
    ic = runtime.identity_center
    confirm_all(removable, start=lambda item: _start(ic.start_deletion, item), describe=ic.deletion_status,
                settings=poll, on_outcome=lambda outcome: _settle(runtime, summary, outcome, "removed"),
                sleep=runtime.sleep, monotonic=runtime.monotonic)
    if settings.recreate_missing:
        missing = [item for item in summary.drift if item.kind is DriftKind.MISSING]
        confirm_all(missing, start=lambda item: _start(ic.start_creation, item), describe=ic.creation_status,
                    settings=poll, on_outcome=lambda outcome: _settle(runtime, summary, outcome, "recreated"),
                    sleep=runtime.sleep, monotonic=runtime.monotonic)


def _start(call, item: Drift) -> AssignmentStatus | Outcome[Drift]:  # noqa: ANN001
    a = item.assignment
    try:
        return call(a.account_id, a.permission_set_arn, a.principal_type, a.principal_id)
    except ClientError as error:
        if error_code(error) == "ResourceNotFoundException" and item.removable:
            return Outcome(item, None, True, "already gone")
        return Outcome(item, None, False, f"{error}")
    except BotoCoreError as error:
        return Outcome(item, None, False, f"{error}")


def _settle(runtime: Runtime, summary: ReconcileSummary, outcome: Outcome[Drift], done: str) -> None:
    item = outcome.item
    at = runtime.now()
    with runtime.engine.begin() as conn:
        queue.record_event(
            conn, at=at, kind="reconcile", actor=runtime.actor, request_id=item.request_id, reason_code="reconcile",
            detail={"action": done if outcome.confirmed else f"not {done}", "drift": item.kind.value,
                    "assignment": describe(item, summary.names), "reason": outcome.reason},
        )
        if outcome.confirmed:
            row = next(row for row in drift_store.open_items(conn)
                       if (row["principal_type"], row["principal_id"], row["permission_set_arn"], row["account_id"],
                           row["kind"]) == drift_store.key_of(item))
            drift_store.resolve(conn, row["id"], at=at, how=f"{done} by reconcile")
    if outcome.confirmed:
        (summary.removed if done == "removed" else summary.recreated).append(item)
    else:
        summary.failed.append((item, outcome.reason or "not confirmed"))
        log.error("reconcile could not be %s: %s: %s", done, describe(item, summary.names), outcome.reason)


def describe(item: Drift, names: drift_store.Names) -> str:
    a = item.assignment
    who = names.principals.get(a.principal, a.principal_id)
    what = names.permission_sets.get(a.permission_set_arn, a.permission_set_arn)
    return f"{item.kind.value}: {a.principal_type.lower()} {who} / {what} / account {a.account_id}"
