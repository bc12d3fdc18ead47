"""Drift is a pure function of what exists and what the system recorded: each kind, what is never drift, and
properties that hold for any state (hypothesis)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from elevation.access.drift import Assignment, DriftKind, Record, compute_drift

ADMIN, POWER = "arn:aws:sso:::permissionSet/ssoins-1/ps-admin", "arn:aws:sso:::permissionSet/ssoins-1/ps-power"
PROD, STG = "111111111111", "222222222222"


def assignment(principal: str, permission_set: str = ADMIN, account: str = PROD, kind: str = "USER") -> Assignment:
    return Assignment(account, permission_set, kind, principal)


def record(**parts) -> Record:  # noqa: ANN003
    empty = {"standing": frozenset(), "active": {}, "ended": {}, "preexisted": {}, "in_motion": frozenset(),
             "protected": frozenset()}
    return Record(**{**empty, **parts})


def kinds(found) -> list[tuple[str, str, int | None]]:  # noqa: ANN001
    return [(item.assignment.principal_id, item.kind.value, item.request_id) for item in found]


def test_an_assignment_nothing_expects_is_unexpected():
    assert kinds(compute_drift([assignment("mallory")], record())) == [("mallory", "unexpected", None)]


def test_an_ended_sessions_assignment_that_still_exists_is_lingering_and_names_the_session():
    found = compute_drift([assignment("dave")], record(ended={assignment("dave"): 7}))
    assert kinds(found) == [("dave", "lingering", 7)]
    assert "request 7 has ended" in found[0].detail


def test_an_active_sessions_or_standing_assignment_that_does_not_exist_is_missing():
    found = compute_drift([], record(active={assignment("alice"): 3}, standing=frozenset({assignment("ops", POWER)})))
    assert kinds(found) == [("alice", "missing", 3), ("ops", "missing", None)]
    assert not any(item.removable for item in found)


def test_an_assignment_kept_because_it_existed_before_the_session_is_unexpected_for_a_human_to_decide():
    found = compute_drift([assignment("carol")], record(preexisted={assignment("carol"): 4}))
    assert kinds(found) == [("carol", "unexpected", 4)]
    assert "existed before request 4" in found[0].detail


def test_standing_active_in_motion_and_protected_assignments_are_never_drift():
    actual = [assignment("ops", POWER), assignment("alice"), assignment("bob"), assignment("breakglass")]
    found = compute_drift(actual, record(
        standing=frozenset({assignment("ops", POWER)}),
        active={assignment("alice"): 1},
        ended={assignment("bob"): 2},  # ended, but its removal is under way right now
        in_motion=frozenset({assignment("bob"), assignment("erin")}),  # erin's grant is in flight: not missing
        protected=frozenset({("USER", "breakglass")}),
    ))
    assert found == []


def test_groups_are_judged_like_users():
    found = compute_drift([assignment("oncall", kind="GROUP")], record(ended={assignment("oncall", kind="GROUP"): 9}))
    assert kinds(found) == [("oncall", "lingering", 9)]


PRINCIPALS = st.sampled_from(["alice", "bob", "carol", "dave", "ops"])
ASSIGNMENTS = st.builds(assignment, PRINCIPALS, st.sampled_from([ADMIN, POWER]), st.sampled_from([PROD, STG]),
                        st.sampled_from(["USER", "GROUP"]))
SETS = st.frozensets(ASSIGNMENTS, max_size=8)
MAPS = st.dictionaries(ASSIGNMENTS, st.integers(1, 50), max_size=6)


@settings(max_examples=300, deadline=None)
@given(actual=SETS, standing=SETS, active=MAPS, ended=MAPS, preexisted=MAPS, in_motion=SETS,
       protected=st.frozensets(st.tuples(st.sampled_from(["USER", "GROUP"]), PRINCIPALS), max_size=2))
def test_for_any_state_drift_is_exactly_the_unexplained_and_the_absent(
    actual, standing, active, ended, preexisted, in_motion, protected
):
    state = record(standing=standing, active=active, ended=ended, preexisted=preexisted, in_motion=in_motion,
                   protected=protected)
    found = compute_drift(actual, state)
    explained = standing | set(active) | in_motion
    removable = {item.assignment for item in found if item.removable}
    missing = {item.assignment for item in found if item.kind is DriftKind.MISSING}
    # Everything that exists and nothing explains is removable drift, once; nothing else ever is.
    assert removable == {a for a in actual if a not in explained and a.principal not in protected}
    assert len([item for item in found if item.removable]) == len(removable)
    assert not removable & (standing | set(active) | in_motion)
    # Missing is what is expected, absent, and not in motion.
    assert missing == {a for a in (set(active) | standing) if a not in actual and a not in in_motion}
    assert compute_drift(list(actual), state) == found  # deterministic
