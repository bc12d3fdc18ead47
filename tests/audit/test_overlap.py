"""Sessions sharing one assignment: the credential tail counts from the actual removal, shared events are named."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from elevation.audit.classify import EventFacts, session_flags
from elevation.audit.overlap import actual_removals, shared_events

T0 = datetime(2026, 11, 28, 9, tzinfo=UTC)
HOUR = timedelta(hours=1)


def row(request_id: int, *, ended: datetime, removed: datetime | None, kept: str | None = None,
        principal: str = "u-dave") -> dict[str, Any]:
    return {"request_id": request_id, "account_id": "111111111111", "permission_set_arn": "arn:ps/admin",
            "principal_type": "USER", "principal_id": principal, "granted_at": T0, "ended_at": ended,
            "assignment_removed_at": removed, "kept_because": kept}


def test_a_session_removed_by_its_own_revoke_has_that_removal() -> None:
    assert actual_removals([row(1, ended=T0 + HOUR, removed=T0 + HOUR + timedelta(seconds=20))]) == {
        "1": (T0 + HOUR + timedelta(seconds=20), None)}


def test_a_kept_assignment_is_removed_when_the_session_that_kept_it_removes_it() -> None:
    removals = actual_removals([
        row(1, ended=T0 + HOUR, removed=None, kept="kept: request 2 is still active until ..."),
        row(2, ended=T0 + 3 * HOUR, removed=T0 + 3 * HOUR + timedelta(seconds=30)),
        row(3, ended=T0 + 3 * HOUR, removed=T0 + 2 * HOUR, principal="u-erin"),  # another assignment
    ])
    assert removals["1"] == (T0 + 3 * HOUR + timedelta(seconds=30), "request 2 is still active until ...")


def test_a_standing_assignment_is_never_removed() -> None:
    removals = actual_removals([row(1, ended=T0 + HOUR, removed=None,
                                    kept="kept: a standing assignment in the policy keeps it")])
    assert removals["1"] == (None, "a standing assignment in the policy keeps it")


def test_the_tail_flag_counts_from_the_actual_removal() -> None:
    late_work = [EventFacts(f"e{i}", T0 + HOUR + timedelta(minutes=10 * i), "s3.amazonaws.com", "PutObject", False,
                            None, "111111111111") for i in range(1, 4)]
    # At the planned end the assignment was kept for the overlapping session: no tail.
    assert [flag.kind for flag in session_flags(late_work, "111111111111", None)] == []
    # Measured from the planned end (the old behaviour) the later session's work looked like a tail.
    assert [flag.kind for flag in session_flags(late_work, "111111111111", T0 + HOUR)] == ["after_end"]


def test_events_in_both_windows_are_shared_and_name_the_other_session() -> None:
    events = pa.table({"session_id": ["1", "2", "1", "2", "10"], "eventID": ["a", "a", "b", "c", "a"]})
    assert shared_events(events) == {"1": {"a": ("2", "10")}, "2": {"a": ("1", "10")}, "10": {"a": ("1", "2")}}
    assert shared_events(pa.table({"session_id": ["1"], "eventID": ["a"]})) == {}
