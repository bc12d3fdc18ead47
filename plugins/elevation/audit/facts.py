"""The facts of one session a report shows, decoupled from the session database (the DAG fills them in)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class SessionFacts:
    """Who had which access, when, on whose approval and why. `window_end` is the end of the audit window
    (the assignment's end plus the longest credential lifetime); `provisional` marks a window still open."""

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
