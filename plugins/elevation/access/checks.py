"""The checks a request passes at intake, at approval and right before granting: the same code for all three.

Its window (unreadable or absurd times end the request, never the batch), then the policy's face checks (no API
call for a hostile row), then the directory (the user, permission set and group exist; the account is in the
organization), then eligibility.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from botocore.exceptions import BotoCoreError, ClientError

from elevation.access.policy import RequestFacts, Verdict, basic_problem, evaluate_request
from elevation.identity_center import AccountNotInOrganization, IdentityCenterError
from elevation.runtime import Runtime
from elevation.store import queue
from elevation.store.database import UnreadableTime


class CheckUnavailable(RuntimeError):
    """Identity Center could not be asked; the request is left as it is and checked again on the next run."""


#: Times outside this range are mistakes or attacks (the database refuses them at insert since migration 0004;
#: older rows, or rows written around the constraint, are rejected here).
SENSIBLE_YEARS = range(2000, 2200)


def request_window(row: queue.Row) -> tuple[datetime, datetime] | str:
    """(start, end) of the request, or the problem with its times (start defaults to when it was inserted)."""
    if isinstance(row["created_at"], UnreadableTime):
        return (
            f"created_at {row['created_at'].raw!r} is not a valid time (leave it to the database's default)"
        )
    start = row["start_at"] if row["start_at"] is not None else row["created_at"]
    if isinstance(start, UnreadableTime):
        return f"start_at {start.raw!r} is not a valid time (use ISO 8601 in UTC, e.g. 2026-11-28 09:30:00)"
    if start.year not in SENSIBLE_YEARS:
        return f"start_at {start.isoformat()} is not a sensible time (years 2000 to 2199)"
    duration = row["duration_minutes"]
    if not isinstance(duration, int):
        return f"duration_minutes {duration!r} is not a whole number"
    try:
        return start, start + timedelta(minutes=duration)
    except OverflowError:
        return f"duration_minutes {duration} is absurd"


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
    try:
        ous = ic.account_ous(facts.account_id)
    except AccountNotInOrganization as error:
        return str(error), [], []
    return None, ic.groups_of_user(user_id), ous
