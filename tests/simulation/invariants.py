"""The promises the system makes, one small function each, checked against a Snapshot after every step.

Each returns the violations it sees, with a message that names the requests and assignments involved. `key`
says what a violation is about (the driver reports each key once per day, at the step it first appeared);
`signature` says what kind of breakage it is (the soak summary groups days by it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from elevation.access.policy import Policy, RequestFacts, check_approver
from elevation.lifecycle import TERMINAL, Status

from .observe import AwsRequest, Names, Snapshot, Triple, triple_of
from .plan import when


@dataclass
class Violation:
    invariant: str
    key: str
    signature: str
    message: str
    request_ids: tuple[int, ...] = ()
    # filled in by the driver when it first sees the key
    step: int = -1
    at: datetime | None = None
    rows: str = ""


@dataclass
class Knowledge:
    """What the simulation itself knows, beyond the database and Identity Center."""

    names: Names
    policy: Policy
    account_ous: dict[str, list[str]]  # account id -> its OU ids and the root, for approver checks
    margin: timedelta
    standing: set[Triple]
    baseline: set[str]  # Identity Center request ids of the world's own set-up (standing assignments)
    by_hand: dict[Triple, int] = field(default_factory=dict)  # made outside the system -> its place in history
    by_hand_ids: set[str] = field(default_factory=set)  # every creation request the administrator sent
    initial_status: dict[int, str] = field(default_factory=dict)  # request id -> status it was inserted with
    innocent: set[int] = field(default_factory=set)  # well-formed rows filed through the queue API
    revocation_runs: list[tuple[datetime, str]] = field(default_factory=list)  # (as of, ok|overdue|failed|killed)
    # request id -> place in the AWS history from which its session's assignment counts as pre-existing (the
    # history's length when the flag was first seen, at the check before); kept up to date by `note_preexisting`
    preexisting_since: dict[int, int] = field(default_factory=dict)
    history_seen: int = 0

    def note_preexisting(self, snap: Snapshot) -> None:
        """Remember when each session was first recorded as pre-existing (call once per check, before checking)."""
        for request_id, session in snap.sessions.items():
            if session["assignment_preexisted"] and request_id not in self.preexisting_since:
                self.preexisting_since[request_id] = self.history_seen
        self.history_seen = len(snap.history)


Check = Callable[[Snapshot, Knowledge], list[Violation]]


def _sent(session: dict[str, Any]) -> bool:
    """A creation was (or may have been) sent for this session."""
    return session["creation_sent_at"] is not None or session["creation_request_id"] is not None


#: Requests that ended without a granted session: a creation sent for one (and never reported FAILED) may have
#: left access behind, which elevation_revocations removes.
UNGRANTED_ENDS = (Status.FAILED, Status.EXPIRED, Status.REJECTED, Status.CANCELLED)


def _cleanup_pending(session: dict[str, Any], status: str | None) -> bool:
    """An unconfirmed grant (its request ended without it) whose creation AWS never reported FAILED: what it may
    have left is still to be removed."""
    return (
        status in UNGRANTED_ENDS
        and _sent(session)
        and session["creation_status"] != "FAILED"
        and session["assignment_removed_at"] is None
        and not session["kept_because"]
    )


def reasons_to_exist(
    triple: Triple, snap: Snapshot, know: Knowledge, *, excluding: int | None = None
) -> list[str]:
    """Why an assignment may exist right now (empty: nothing needs it)."""
    reasons = []
    if triple in know.standing:
        reasons.append("a standing assignment of the policy")
    if triple in know.by_hand:
        reasons.append("made by hand before the system touched it")
    for session in snap.sessions_on(triple):
        request_id = session["request_id"]
        if request_id == excluding:
            continue
        status = snap.status_of(request_id)
        if session["assignment_preexisted"]:
            reasons.append(f"recorded as already there by request {request_id}")
        if status in (Status.ACTIVE, Status.ENDING):
            reasons.append(f"request {request_id} is {status}")
        elif status in (Status.APPROVED, Status.SCHEDULED) and _sent(session):
            reasons.append(f"request {request_id}'s grant is in flight")
        elif _cleanup_pending(session, status):
            reasons.append(f"request {request_id} ({status}) awaits the cleanup of its unconfirmed grant")
    return reasons


def _describe_sessions(triple: Triple, snap: Snapshot) -> str:
    parts = []
    for session in snap.sessions_on(triple):
        request_id = session["request_id"]
        parts.append(
            f"request {request_id} is {snap.status_of(request_id)} (creation sent "
            f"{when(session['creation_sent_at']) if session['creation_sent_at'] else '-'}, request id "
            f"{session['creation_request_id'] or '-'}, status {session['creation_status'] or '-'}; removed "
            f"{when(session['assignment_removed_at']) if session['assignment_removed_at'] else '-'}, kept "
            f"{'yes' if session['kept_because'] else 'no'}"
            f"{', pre-existing' if session['assignment_preexisted'] else ''})"
        )
    return "; ".join(parts) or "no session ever recorded it"


def _copies(triple: Triple, snap: Snapshot) -> str:
    count = snap.copies.get(triple, 0)
    return "" if count == 1 else f" (the emulator holds {count} copies)"


# --- 1. no untracked access ---------------------------------------------------------------------------------


def no_untracked_access(snap: Snapshot, know: Knowledge) -> list[Violation]:
    """Every assignment that exists is needed by a session, a grant in flight, a cleanup, policy or a person."""
    out = []
    for triple in sorted(snap.present):
        if reasons_to_exist(triple, snap, know):
            continue
        sessions = snap.sessions_on(triple)
        statuses = sorted({str(snap.status_of(s["request_id"])) for s in sessions}) or ["no session"]
        out.append(
            Violation(
                "no_untracked_access",
                key=f"untracked {triple}",
                signature=f"untracked access ({', '.join(statuses)})",
                message=(
                    f"{know.names.triple(triple)} exists in Identity Center{_copies(triple, snap)} but nothing "
                    f"needs it: {_describe_sessions(triple, snap)}"
                ),
                request_ids=tuple(s["request_id"] for s in sessions),
            )
        )
    return out


# --- 2. no access outlives its session ----------------------------------------------------------------------


def _due(row: dict[str, Any]) -> datetime | None:
    """When the session's access should end: its end, or an earlier requested early end."""
    times = [t for t in (row["end_at"], row["revoke_requested_at"]) if isinstance(t, datetime)]
    return min(times) if times else None


def _ended_at(snap: Snapshot, request_id: int) -> datetime | None:
    """When the request reached the status it is in (its last transition)."""
    chain = snap.log.transitions.get(request_id, [])
    return chain[-1]["at"] if chain else None


def no_access_outlives_its_session(snap: Snapshot, know: Knowledge) -> list[Violation]:
    """Access ends within one revocations run plus the overdue margin of its due time, or a run fails loudly."""
    out = []
    for request_id, row in snap.requests.items():
        session = snap.sessions.get(request_id)
        if session is None or triple_of(session) not in snap.present:
            continue
        status = row["status"]
        if status in (Status.ACTIVE, Status.ENDING):
            due, what = _due(row), "its end"
        elif _cleanup_pending(session, status):
            due, what = _ended_at(snap, request_id), f"it ended {status} with its grant unconfirmed"
        else:
            continue
        if due is None or due + know.margin > snap.at:
            continue
        triple = triple_of(session)
        if reasons_to_exist(triple, snap, know, excluding=request_id):
            continue  # someone else needs that assignment now
        deadline = due + know.margin
        quiet = [as_of for as_of, outcome in know.revocation_runs if outcome == "ok" and as_of >= deadline]
        if quiet:
            out.append(
                Violation(
                    "no_access_outlives_its_session",
                    key=f"outlives {request_id}",
                    signature=f"access outlives a {status} session without a loud revocations run",
                    message=(
                        f"request {request_id} ({status}) still holds {know.names.triple(triple)}"
                        f"{_copies(triple, snap)} at {when(snap.at)}; {what} was {when(due)}, margin "
                        f"{know.margin}, and the revocations run as of {when(quiet[0])} finished ok "
                        f"without removing it or raising RevocationOverdue"
                    ),
                    request_ids=(request_id,),
                )
            )
    return out


# --- 3. actions applied at most once, as recorded, by people entitled to them --------------------------------


def actions_applied_once_as_recorded(snap: Snapshot, know: Knowledge) -> list[Violation]:
    """`applied` iff exactly one transition carries the action's id; `refused` iff none; never two."""
    out = []
    for action in snap.actions:
        events = snap.log.by_action.get(action["id"], [])
        outcome = action["outcome"]
        problem = None
        if len(events) > 1:
            problem, signature = f"{len(events)} transitions carry it (events {events})", "action applied twice"
        elif outcome == "applied" and not events:
            problem, signature = "recorded applied but no transition carries it", "applied action left no transition"
        elif outcome == "refused" and events:
            problem, signature = f"recorded refused but transition event {events[0]} applied it", "refused action applied"
        elif outcome not in (None, "applied", "refused"):
            problem, signature = f"unknown outcome {outcome!r}", "unknown action outcome"
        if problem:
            out.append(
                Violation(
                    "actions_applied_once_as_recorded",
                    key=f"action {action['id']}",
                    signature=signature,
                    message=(
                        f"action {action['id']} ({action['action']} of request {action['request_id']} by "
                        f"{action['actor']!r}): {problem}; outcome {outcome!r}, reason {action['outcome_reason']!r}"
                    ),
                    request_ids=(action["request_id"],),
                )
            )
    return out


def actions_applied_only_by_entitled_people(snap: Snapshot, know: Knowledge) -> list[Violation]:
    """An applied approve/reject came from an approver of the account (not the requester); a cancel from the
    requester; a revoke from the requester or an approver."""
    out = []
    policy = know.policy
    for action in snap.actions:
        if not snap.log.by_action.get(action["id"]):
            continue
        request = snap.requests.get(action["request_id"])
        if request is None:
            continue
        actor, requester = policy.person(action["actor"]), policy.person(request["requester"])
        is_requester = actor is not None and requester is not None and actor.login == requester.login
        facts = RequestFacts(
            requester=request["requester"], account_id=str(request["account_id"]),
            permission_set=request["permission_set"], principal_group=request["principal_group"],
            start_at=request["created_at"], duration=timedelta(0), justification=None, ticket=None,
            approver=action["actor"],
        )
        is_approver = actor is not None and check_approver(
            policy, facts, know.account_ous.get(facts.account_id, [])
        ) is None
        kind = action["action"]
        entitled = {
            "approve": is_approver,
            "reject": is_approver,
            "cancel": is_requester,
            "revoke": is_requester or is_approver,
        }.get(kind, False)
        if not entitled:
            out.append(
                Violation(
                    "actions_applied_only_by_entitled_people",
                    key=f"entitled {action['id']}",
                    signature=f"{kind} applied for someone not entitled",
                    message=(
                        f"action {action['id']} ({kind} of request {request['id']}, requested by "
                        f"{request['requester']!r}) was applied for {action['actor']!r}, who may not {kind} it"
                    ),
                    request_ids=(request["id"],),
                )
            )
    return out


# --- 4. every request ends, with a reason; no row holds up another ------------------------------------------


def every_request_ends_with_a_reason(snap: Snapshot, know: Knowledge) -> list[Violation]:
    """After the day (faults stopped, time past every end, clean rounds): terminal, with a reason code."""
    out = []
    for request_id, row in snap.requests.items():
        if row["status"] in TERMINAL and row["reason_code"]:
            continue
        kind = "innocent" if request_id in know.innocent else "hostile"
        out.append(
            Violation(
                "every_request_ends_with_a_reason",
                key=f"unfinished {request_id}",
                signature=f"{kind} request left {row['status']}" + ("" if row["reason_code"] else " without a reason"),
                message=(
                    f"request {request_id} ({kind}) is {row['status']} with reason {row['reason_code']!r} "
                    f"({row['status_reason']!r}) after the day was settled; validated at {when(row['validated_at'])}"
                ),
                request_ids=(request_id,),
            )
        )
    return out


def every_action_processed(snap: Snapshot, know: Knowledge) -> list[Violation]:
    """After the day: every action has an outcome."""
    return [
        Violation(
            "every_action_processed",
            key=f"unprocessed {action['id']}",
            signature="action never processed",
            message=f"action {action['id']} ({action['action']} of request {action['request_id']}) was never processed",
            request_ids=(action["request_id"],),
        )
        for action in snap.actions
        if action["processed_at"] is None or action["outcome"] is None
    ]


def clean_intake_judges_every_row(snap: Snapshot, know: Knowledge, inserted_before: set[int]) -> list[Violation]:
    """After an intake that ran alone, unharmed, with Identity Center healthy: every row inserted before it (and
    not held by another worker's claim then) is validated or decided. An innocent row left behind was held up
    (by another's bad row); a bad one left pending is deferred, maybe forever, instead of rejected with a reason."""
    out = []
    for request_id in sorted(inserted_before):
        row = snap.requests.get(request_id)
        if row is None or row["status"] not in (Status.PENDING, Status.APPROVED) or row["validated_at"] is not None:
            continue
        innocent = request_id in know.innocent
        out.append(
            Violation(
                "clean_intake_judges_every_row",
                key=f"unjudged {request_id}",
                signature="innocent row held up by a clean intake" if innocent else "bad row left unjudged by a clean intake",
                message=(
                    f"request {request_id} ({'innocent' if innocent else 'hostile'}, account "
                    f"{str(row['account_id'])[:20]!r}) is still {row['status']} and not validated after an intake "
                    f"that ran alone with Identity Center healthy"
                ),
                request_ids=(request_id,),
            )
        )
    return out


def clean_intake_failed(error: str) -> Violation:
    """An intake that ran alone, unharmed, with Identity Center healthy, raised: some row stops every intake."""
    kind = error.split(":", 1)[0]
    return Violation(
        "clean_intake_judges_every_row",
        key=f"intake failed {kind}",
        signature=f"intake failed with Identity Center healthy ({kind})",
        message=f"an intake that ran alone, unharmed, with Identity Center healthy raised {error}",
    )


# --- 5. the event log accounts for every transition and every change made in AWS ----------------------------


def event_log_accounts_for_every_transition(snap: Snapshot, know: Knowledge) -> list[Violation]:
    """Each request's transition events lead, without a gap, from the status it was inserted with to its own."""
    out = []
    for request_id, row in snap.requests.items():
        expected = know.initial_status.get(request_id, Status.PENDING.value)
        chain = snap.log.transitions.get(request_id, [])
        problem = None
        for event in chain:
            if event["from_status"] != expected:
                problem = f"event {event['id']} moves it from {event['from_status']}, but it was {expected}"
                break
            expected = event["to_status"]
        if problem is None and expected != row["status"]:
            problem = f"the events lead to {expected}, but the row is {row['status']}"
        if problem:
            out.append(
                Violation(
                    "event_log_accounts_for_every_transition",
                    key=f"chain {request_id}",
                    signature="transition missing from the event log",
                    message=f"request {request_id}: {problem}",
                    request_ids=(request_id,),
                )
            )
    return out


def _system_requests(snap: Snapshot, know: Knowledge, kind: str) -> list[AwsRequest]:
    return [
        item for item in snap.history
        if item.kind == kind and item.request_id not in know.baseline and item.request_id not in know.by_hand_ids
    ]


def every_creation_recorded_before_it_is_sent(snap: Snapshot, know: Knowledge) -> list[Violation]:
    """Each CreateAccountAssignment AWS accepted is covered by a session that recorded `creation_sent_at` first,
    so a worker killed right after the call still leaves a trace that access may exist."""
    out = []
    for item in _system_requests(snap, know, "creation"):
        sessions = snap.sessions_on(item.triple)
        if any(s["creation_sent_at"] is not None for s in sessions):
            continue
        out.append(
            Violation(
                "every_creation_recorded_before_it_is_sent",
                key=f"creation {item.request_id}",
                signature="creation sent without creation_sent_at recorded",
                message=(
                    f"CreateAccountAssignment {item.request_id} of {know.names.triple(item.triple)} "
                    f"({'FAILED' if item.failed else 'landed'}) is covered by no session's creation_sent_at: "
                    f"{_describe_sessions(item.triple, snap)}"
                ),
                request_ids=tuple(s["request_id"] for s in sessions),
            )
        )
    return out


def every_deletion_recorded(snap: Snapshot, know: Knowledge) -> list[Violation]:
    """Each DeleteAccountAssignment AWS accepted is recorded: on a session (its request id or the removal), or
    at least as an `aws_call` event. (Checked after the day: a killed worker's deletion is recorded by the run
    that finds the assignment gone.)"""
    deletions = _system_requests(snap, know, "deletion")
    logged = snap.log.aws_ok.get("DeleteAccountAssignment", 0)
    out = []
    for item in deletions:
        sessions = snap.sessions_on(item.triple)
        recorded = any(
            s["deletion_request_id"] == item.request_id or s["assignment_removed_at"] is not None for s in sessions
        )
        if recorded or logged >= len(deletions):
            continue
        out.append(
            Violation(
                "every_deletion_recorded",
                key=f"deletion {item.request_id}",
                signature="deletion recorded nowhere",
                message=(
                    f"DeleteAccountAssignment {item.request_id} of {know.names.triple(item.triple)} is on no "
                    f"session and the event log has {logged} successful deletions for {len(deletions)} made: "
                    f"{_describe_sessions(item.triple, snap)}"
                ),
                request_ids=tuple(s["request_id"] for s in sessions),
            )
        )
    return out


# --- 6. access others need is never taken away --------------------------------------------------------------


def access_others_need_is_never_removed(snap: Snapshot, know: Knowledge) -> list[Violation]:
    """The system never deletes a standing assignment, one made by hand, or one it recorded as pre-existing."""
    out = []
    preexisting: dict[Triple, int] = {}  # assignment -> from where in the history it counts as pre-existing
    for request_id, since in know.preexisting_since.items():
        session = snap.sessions.get(request_id)
        if session is not None:
            triple = triple_of(session)
            preexisting[triple] = min(since, preexisting.get(triple, since))
    never = len(snap.history)
    for position, item in enumerate(snap.history):
        if item.kind != "deletion" or item.failed or item.request_id in know.by_hand_ids:
            continue
        whose = (
            "a standing assignment" if item.triple in know.standing
            else "an assignment made by hand before any grant" if know.by_hand.get(item.triple, never) < position
            else "an assignment recorded as pre-existing" if preexisting.get(item.triple, never) <= position
            else None
        )
        if whose is None:
            continue
        sessions = snap.sessions_on(item.triple)
        out.append(
            Violation(
                "access_others_need_is_never_removed",
                key=f"removed {item.request_id}",
                signature=f"the system deleted {whose}",
                message=(
                    f"DeleteAccountAssignment {item.request_id} removed {know.names.triple(item.triple)}, "
                    f"{whose}: {_describe_sessions(item.triple, snap)}"
                ),
                request_ids=tuple(s["request_id"] for s in sessions),
            )
        )
    return out


def active_sessions_have_access(snap: Snapshot, know: Knowledge) -> list[Violation]:
    """A request shown `active` has its assignment (an overlapping session's end must not take it away)."""
    out = []
    for request_id, row in snap.requests.items():
        session = snap.sessions.get(request_id)
        if row["status"] != Status.ACTIVE or session is None or triple_of(session) in snap.present:
            continue
        triple = triple_of(session)
        out.append(
            Violation(
                "active_sessions_have_access",
                key=f"no access {request_id}",
                signature="active session without its assignment",
                message=(
                    f"request {request_id} is active but {know.names.triple(triple)} does not exist"
                    f"{_copies(triple, snap)}: {_describe_sessions(triple, snap)}"
                ),
                request_ids=tuple(s["request_id"] for s in snap.sessions_on(triple)),
            )
        )
    return out


#: Checked after every step.
AFTER_EVERY_STEP: tuple[Check, ...] = (
    no_untracked_access,
    no_access_outlives_its_session,
    actions_applied_once_as_recorded,
    actions_applied_only_by_entitled_people,
    event_log_accounts_for_every_transition,
    every_creation_recorded_before_it_is_sent,
    access_others_need_is_never_removed,
    active_sessions_have_access,
)
#: Checked once the day is settled (they hold only eventually).
AFTER_THE_DAY: tuple[Check, ...] = (
    every_request_ends_with_a_reason,
    every_action_processed,
    every_deletion_recorded,
)
