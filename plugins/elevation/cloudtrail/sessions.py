"""The input of the extract: who a session is in CloudTrail, and for how long its credentials can act."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

ACCOUNT_ID = re.compile(r"\d{12}")


@dataclass(frozen=True)
class SessionIdentity:
    """One elevated session as CloudTrail will show it: an `AWSReservedSSO_<permission set>_<hash>` role in
    `account_id`, assumed with each user's name as role session name, between grant and the end of the audit window."""

    session_id: str
    account_id: str
    permission_set_name: str
    user_names: tuple[str, ...]
    granted_at: datetime
    ended_at: datetime | None
    planned_end: datetime
    permission_set_session_duration: timedelta

    def __post_init__(self) -> None:
        if not ACCOUNT_ID.fullmatch(self.account_id):
            raise ValueError(f"session {self.session_id}: account id {self.account_id!r} is not 12 digits")
        if not self.user_names:
            raise ValueError(f"session {self.session_id}: no user names to match")
        for moment in (self.granted_at, self.ended_at, self.planned_end):
            if moment is not None and moment.tzinfo is None:
                raise ValueError(f"session {self.session_id}: naive datetime {moment!r}; use aware UTC")

    @property
    def audit_window(self) -> tuple[datetime, datetime]:
        """(grant, end + session duration): credentials issued just before the revoke stay valid that long."""
        end = self.ended_at or self.planned_end
        return self.granted_at, end + self.permission_set_session_duration

    def overlaps(self, start: datetime, end: datetime) -> bool:
        """Whether the audit window meets [start, end) (used to pick the sessions of a night)."""
        window_start, window_end = self.audit_window
        return window_start < end and start <= window_end
