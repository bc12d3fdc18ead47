"""Policy: who may request what, who approves, limits, standing assignments, forbidden accounts.

The `policy` section of the configuration file (see config.py), validated at load, so a broken file fails the
run with a message naming the file, the field and the problem instead of failing half-way through a grant. The decisions here are pure functions of a request, the policy and facts looked up elsewhere (the
account's OUs, the requester's groups): they are tested directly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

ACCOUNT_ID = re.compile(r"\d{12}")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> Any:
    """Accept `90m`, `4h`, `1d`, `30s`, plain seconds, or ISO 8601 (`PT4H`), as people write them in YAML."""
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return timedelta(seconds=float(match.group(1)) * _UNIT_SECONDS[match.group(2).lower()])
    return value


Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _account_id(value: Any) -> str:
    text = str(value)
    if not ACCOUNT_ID.fullmatch(text):
        raise ValueError(f"{value!r} is not an AWS account id (12 digits, quoted in YAML)")
    return text


AccountId = Annotated[str, BeforeValidator(_account_id)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Person(_Model):
    """Someone who uses the system: the names other systems know them by, and their Identity Center user."""

    login: str
    email: str | None = None
    identity_center_user: str = Field(description="UserName in the Identity Store")


class Principals(_Model):
    users: tuple[str, ...] = ()  # logins of people
    groups: tuple[str, ...] = ()  # Identity Center group display names


class Scope(_Model):
    accounts: tuple[AccountId, ...] = ()
    ous: tuple[
        str, ...
    ] = ()  # OU ids (ou-xxxx-yyyyyyyy) or the root id; an account matches if any ancestor is listed

    def covers(self, account_id: str, account_ous: Sequence[str]) -> bool:
        return account_id in self.accounts or any(ou in self.ous for ou in account_ous)


class EligibilityRule(Scope):
    name: str
    principals: Principals
    permission_sets: tuple[str, ...]
    max_duration: Duration = timedelta(hours=4)


class AutoApprovalRule(EligibilityRule):
    """Requests that need no approver (e.g. on-call break-glass). Always audited afterwards."""


class ApproverRule(Scope):
    approvers: tuple[str, ...]  # logins


class StandingAssignment(_Model):
    """An assignment that exists for reasons outside this system; never removed by it."""

    user: str | None = None  # Identity Center user name
    group: str | None = None  # Identity Center group display name
    permission_set: str
    account: AccountId

    @model_validator(mode="after")
    def _one_principal(self) -> StandingAssignment:
        if (self.user is None) == (self.group is None):
            raise ValueError("give exactly one of user or group")
        return self


class IdentityCenterSettings(_Model):
    instance_arn: str | None = None  # discovered with ListInstances when omitted
    identity_store_id: str | None = None
    region: str | None = None  # defaults to the connection's region
    # Identity Center's APIs share about 20 requests/s per account: calls are paced client-side to stay under it.
    max_calls_per_second: float = Field(20.0, gt=0)


class Limits(_Model):
    max_duration: Duration = timedelta(hours=12)
    justification_required: bool = True
    max_justification_length: int = 4000
    max_ticket_length: int = 200
    max_name_length: int = 256
    request_expiry: Duration = timedelta(hours=24)  # pending this long without a decision -> expired
    max_start_ahead: Duration = timedelta(days=30)


class GrantSettings(_Model):
    max_creations_in_flight: int = Field(10, ge=1, le=10)  # AWS: at most 10 per Identity Center instance
    status_poll_initial: Duration = timedelta(seconds=1)
    status_poll_max: Duration = timedelta(seconds=10)
    status_wait_bound: Duration = timedelta(minutes=3)
    # An approved request due this long and still not granted fails the run (AWS failing, the DAG or its pool missing).
    overdue_after: Duration = timedelta(minutes=15)


class RevocationSettings(_Model):
    overdue_margin: Duration = timedelta(minutes=10)


class Policy(_Model):
    identity_center: IdentityCenterSettings = IdentityCenterSettings()
    management_account_id: AccountId | None = None
    forbidden_accounts: tuple[AccountId, ...] = ()
    people: tuple[Person, ...] = ()
    eligibility: tuple[EligibilityRule, ...] = ()
    auto_approval: tuple[AutoApprovalRule, ...] = ()
    approvers: tuple[ApproverRule, ...] = ()
    allow_self_approval: bool = False
    standing_assignments: tuple[StandingAssignment, ...] = ()
    limits: Limits = Limits()
    grants: GrantSettings = GrantSettings()
    revocation: RevocationSettings = RevocationSettings()

    @field_validator("people")
    @classmethod
    def _unique_logins(cls, people: tuple[Person, ...]) -> tuple[Person, ...]:
        seen: set[str] = set()
        for person in people:
            for key in filter(None, (person.login.lower(), (person.email or "").lower())):
                if key in seen:
                    raise ValueError(f"{key!r} names two people")
                seen.add(key)
        return people

    @model_validator(mode="after")
    def _references_resolve(self) -> Policy:
        logins = {person.login for person in self.people}
        for index, rule in enumerate(self.eligibility):
            _known(rule.principals.users, logins, f"eligibility.{index}.principals.users")
        for index, rule in enumerate(self.auto_approval):
            _known(rule.principals.users, logins, f"auto_approval.{index}.principals.users")
        for index, rule in enumerate(self.approvers):
            _known(rule.approvers, logins, f"approvers.{index}.approvers")
        return self

    @property
    def never_requestable(self) -> frozenset[str]:
        """Forbidden accounts; the management account is always among them."""
        extra = {self.management_account_id} if self.management_account_id else set()
        return frozenset(self.forbidden_accounts) | extra

    def person(self, name: str | None) -> Person | None:
        """Find a person by login or email (case-insensitive), as outside systems may know either."""
        if not name:
            return None
        key = name.strip().lower()
        for person in self.people:
            if key in (person.login.lower(), (person.email or "").lower()):
                return person
        return None


def _known(names: Iterable[str], logins: set[str], where: str) -> None:
    unknown = sorted(set(names) - logins)
    if unknown:
        raise ValueError(f"{where} names {unknown}, who are not listed under people")


# --- decisions -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestFacts:
    """What a decision needs to know about a request; built from the queue row."""

    requester: str
    account_id: str
    permission_set: str
    principal_group: str | None  # the group to assign instead of the requester's own user
    start_at: datetime
    duration: timedelta
    justification: str | None
    ticket: str | None
    approver: str | None


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""  # human-readable, stored on the row when not ok
    auto_approval_rule: str | None = None  # set when the request needs no approver
    max_duration: timedelta | None = None


def matching_rules(
    rules: Sequence[EligibilityRule],
    facts: RequestFacts,
    requester: Person,
    requester_groups: Iterable[str],
    account_ous: Sequence[str],
) -> list[EligibilityRule]:
    """Rules under which this requester may ask for this permission set in this account for this principal."""
    groups = set(requester_groups)
    found = []
    for rule in rules:
        if facts.permission_set not in rule.permission_sets:
            continue
        if not rule.covers(facts.account_id, account_ous):
            continue
        requester_named = requester.login in rule.principals.users or bool(
            groups & set(rule.principals.groups)
        )
        if not requester_named:
            continue
        if facts.principal_group is not None and facts.principal_group not in rule.principals.groups:
            continue
        found.append(rule)
    return found


def evaluate_request(
    policy: Policy,
    facts: RequestFacts,
    *,
    requester_groups: Iterable[str],
    account_ous: Sequence[str],
    now: datetime,
) -> Verdict:
    """Is this request allowed as it stands, given the directory facts looked up for it?

    Called at intake, at approval and again right before granting (policy may have changed in between).
    """
    problem = basic_problem(policy, facts, now)
    if problem:
        return Verdict(False, problem)
    requester = policy.person(facts.requester)
    assert requester is not None  # basic_problem checked it
    groups = list(requester_groups)
    eligible = matching_rules(policy.eligibility, facts, requester, groups, account_ous)
    automatic = matching_rules(policy.auto_approval, facts, requester, groups, account_ous)
    if not eligible and not automatic:
        target = facts.principal_group or requester.login
        return Verdict(
            False,
            f"{target} is not eligible for {facts.permission_set} in account {facts.account_id}",
        )
    auto_fit = [rule for rule in automatic if facts.duration <= rule.max_duration]
    max_duration = max(rule.max_duration for rule in [*eligible, *automatic])
    if facts.duration > max_duration:
        return Verdict(False, f"duration {facts.duration} is over the eligible maximum {max_duration}")

    if facts.approver is not None:
        approver_problem = check_approver(policy, facts, account_ous)
        if approver_problem:
            return Verdict(False, approver_problem)
    return Verdict(True, auto_approval_rule=auto_fit[0].name if auto_fit else None, max_duration=max_duration)


def basic_problem(policy: Policy, facts: RequestFacts, now: datetime) -> str | None:
    """What is wrong with the request on its face (no directory lookup needed), or None."""
    limits = policy.limits
    too_long = text_over_limits(policy, facts)
    if too_long:
        return too_long
    if policy.person(facts.requester) is None:
        return f"requester {facts.requester!r} is not a known person in the policy"
    if not ACCOUNT_ID.fullmatch(facts.account_id or ""):
        return f"account id {facts.account_id!r} is not 12 digits"
    if facts.account_id in policy.never_requestable:
        return f"account {facts.account_id} can never be requested"
    if facts.duration <= timedelta(0):
        return "duration must be positive"
    if facts.duration > limits.max_duration:
        return f"duration {facts.duration} is over the policy maximum {limits.max_duration}"
    if facts.start_at + facts.duration <= now:
        return "the requested window is already over"
    if facts.start_at - now > limits.max_start_ahead:
        return f"start is more than {limits.max_start_ahead} ahead"
    if limits.justification_required and not (facts.justification or "").strip():
        return "a justification is required"
    if facts.approver is not None and policy.person(facts.approver) is None:
        return f"approver {facts.approver!r} is not a known person in the policy"
    return None


def text_over_limits(policy: Policy, facts: RequestFacts) -> str | None:
    """Free text is stored verbatim whatever its language, but not without bound."""
    limits = policy.limits
    fields = {
        "justification": (facts.justification, limits.max_justification_length),
        "ticket": (facts.ticket, limits.max_ticket_length),
        "requester": (facts.requester, limits.max_name_length),
        "approver": (facts.approver, limits.max_name_length),
        "permission_set": (facts.permission_set, limits.max_name_length),
        "principal_group": (facts.principal_group, limits.max_name_length),
    }
    for name, (value, limit) in fields.items():
        if value is not None and len(value) > limit:
            return f"{name} is {len(value)} characters long; the limit is {limit}"
    return None


def check_approver(policy: Policy, facts: RequestFacts, account_ous: Sequence[str]) -> str | None:
    """The problem with the request's approver, or None. Writers are not trusted: an approval is checked too."""
    approver = policy.person(facts.approver)
    if approver is None:
        return f"approver {facts.approver!r} is not a known person in the policy"
    requester = policy.person(facts.requester)
    if requester is not None and approver.login == requester.login and not policy.allow_self_approval:
        return "a requester may not approve their own request"
    allowed = any(
        approver.login in rule.approvers
        for rule in policy.approvers
        if rule.covers(facts.account_id, account_ous)
    )
    if not allowed:
        return f"{approver.login} is not an approver for account {facts.account_id}"
    return None


@dataclass(frozen=True)
class Triple:
    """What an Identity Center account assignment is: (principal, permission set, account)."""

    principal_type: Literal["USER", "GROUP"]
    principal_name: str
    permission_set: str
    account_id: str


def standing_triples(policy: Policy) -> frozenset[Triple]:
    return frozenset(
        Triple(
            "USER" if item.user else "GROUP", item.user or item.group or "", item.permission_set, item.account
        )
        for item in policy.standing_assignments
    )


def approvers_for(policy: Policy, requester: str, account_id: str, account_ous: Iterable[str]) -> list[Person]:
    """The people who may approve this request: approvers of every rule covering the account (or its OUs), never
    the requester unless the policy allows self-approval. In policy order, each once."""
    ous = list(account_ous)
    me = policy.person(requester)
    found: list[Person] = []
    for rule in policy.approvers:
        if not rule.covers(account_id, ous):
            continue
        for login in rule.approvers:
            person = policy.person(login)
            if person is None or person in found:
                continue
            if me is not None and person.login == me.login and not policy.allow_self_approval:
                continue
            found.append(person)
    return found
