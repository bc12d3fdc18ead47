"""Per-session flags: refused-call bursts, activity in other accounts, and the credential tail after removal."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from elevation.audit.classify import EventFacts, after_end, failed_call_bursts, outside_account, session_flags

T0 = datetime(2026, 1, 1, 9, 0, tzinfo=UTC)


def facts(minute: float, error: str | None = None, account: str = "111122223333", read_only: bool = True,
          name: str = "ListUsers") -> EventFacts:  # fmt: skip
    return EventFacts(
        event_id=f"e{minute}",
        event_time=T0 + timedelta(minutes=minute),
        event_source="iam.amazonaws.com",
        event_name=name,
        read_only=read_only,
        error_code=error,
        recipient_account_id=account,
    )


def test_five_refusals_within_five_minutes_are_a_burst() -> None:
    events = [facts(minute, "AccessDenied") for minute in (0, 1, 2, 3, 4)] + [facts(4.5)]
    (flag,) = failed_call_bursts(events)
    assert flag.kind == "failed_calls"
    assert len(flag.event_ids) == 5
    assert flag.first_time == T0 and flag.last_time == T0 + timedelta(minutes=4)
    assert flag.details == ("iam:ListUsers",)


def test_refusals_spread_out_or_too_few_are_not() -> None:
    assert failed_call_bursts([facts(minute * 10, "AccessDenied") for minute in range(6)]) == []
    assert failed_call_bursts([facts(minute, "AccessDenied") for minute in range(4)]) == []
    assert failed_call_bursts([facts(minute, "ThrottlingException") for minute in range(10)]) == []


def test_overlapping_windows_merge_and_ec2_style_codes_count() -> None:
    events = [facts(minute, "Client.UnauthorizedOperation") for minute in range(12)]
    (flag,) = failed_call_bursts(events, threshold=5, window=timedelta(minutes=5))
    assert len(flag.event_ids) == 12


def test_events_in_another_account_are_flagged() -> None:
    events = [facts(0), facts(1, account="999988887777"), facts(2, account="999988887777")]
    (flag,) = outside_account(events, "111122223333")
    assert flag.severity == "high"
    assert flag.details == ("999988887777",)
    assert flag.event_ids == ("e1", "e2")
    assert outside_account(events[:1], "111122223333") == []


def test_events_after_the_assignment_was_removed_are_the_credential_tail() -> None:
    ended = T0 + timedelta(minutes=30)
    events = [facts(10), facts(30), facts(31), facts(55, read_only=False, name="CreateAccessKey")]
    (flag,) = after_end(events, ended)
    assert flag.event_ids == ("e31", "e55")
    assert flag.severity == "high"  # a write after removal
    assert "25 min later" in flag.summary
    assert after_end(events, None) == []
    (reads_only,) = after_end(events[:3], ended)
    assert reads_only.severity == "medium"


def test_session_flags_combines_all_three() -> None:
    events = [facts(minute, "AccessDenied") for minute in range(5)] + [facts(70, account="999988887777")]
    kinds = [flag.kind for flag in session_flags(events, "111122223333", T0 + timedelta(minutes=60))]
    assert kinds == ["failed_calls", "outside_account", "after_end"]
