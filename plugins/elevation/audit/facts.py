"""The facts of one session a report shows, decoupled from the session database (the DAG fills them in)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from elevation.extract.manifest import DataProblem

__all__ = ["DataProblem", "SessionFacts", "SessionNotes"]


@dataclass(frozen=True)
class SessionFacts:
    """Who had which access, when, on whose approval and why. `window_end` is the end of the audit window
    (the session's end plus the longest credential lifetime); `provisional` marks a window still open.

    `ended_at` is when the session ended (its planned end, or earlier when someone ended it: `ended_by`,
    `end_reason`). The assignment is not always removed then: `assignment_removed_at` is when it actually was
    (None: not yet, or never), and `assignment_kept` says why it outlived the session (a standing assignment,
    another session that still needs it). Credentials issued before the removal can still act after it: that
    tail is measured from `assignment_removed_at`, never from the planned end."""

    session_id: str
    requester: str | None = None
    principal: str | None = None
    account_id: str | None = None
    account_name: str | None = None
    permission_set: str | None = None
    approver: str | None = None
    justification: str | None = None
    ticket: str | None = None
    granted_at: datetime | None = None
    ended_at: datetime | None = None
    window_end: datetime | None = None
    provisional: bool = False
    requested_start: datetime | None = None
    requested_end: datetime | None = None
    ended_by: str | None = None
    end_reason: str | None = None
    assignment_removed_at: datetime | None = None
    assignment_kept: str | None = None
    ticket_url: str | None = None  # the ticket as a link (audit.ticket_url_template), None: shown as text


@dataclass(frozen=True)
class SessionNotes:
    """What the night says about one session's data, beyond its events and findings."""

    problems: tuple[DataProblem, ...] = ()
    #: eventID -> the other sessions whose windows also hold the event (same user and permission set,
    #: overlapping sessions): the event is shown in each, marked as shared, never as each one's own alone.
    shared_events: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    suppressed: tuple = ()  # (Finding, Suppression) pairs: counted and listed, never silently dropped
    #: Events delivered after the session's report was first final (the late-delivery re-check found them).
    late_events: int = 0
    first_final_at: datetime | None = None

    @property
    def missing_data(self) -> tuple[DataProblem, ...]:
        return tuple(problem for problem in self.problems if problem.is_error)
