"""Which night owns an event, and what a night's extract must read: the pure decisions behind exactly-once.

A night is a calendar day of the configured time zone, [00:00, 24:00) local, i.e. a [start, end) interval in
UTC. The partition `date=YYYY-MM-DD` of a night holds exactly the session events whose eventTime falls in that
interval. A night's run reads more than it owns: a delivery margin after the end (CloudTrail delivers up to ~15
minutes late) and a look-back before the start (sts AssumeRole events of the previous night that explain this
night's chained-credential activity); what it reads outside its own interval only informs the matching and is
never written. So each (session, eventID) has one owner partition, whatever the runs, retries and overlaps.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from elevation.cloudtrail.matcher import CHAINED_CREDENTIALS_MAX
from elevation.cloudtrail.sessions import SessionIdentity

DEFAULT_LOOKBACK = CHAINED_CREDENTIALS_MAX


def night_window(night: date, timezone: str = "UTC") -> tuple[datetime, datetime]:
    """[start, end) in UTC of a local calendar day (23 or 25 hours long on daylight-saving days)."""
    zone = ZoneInfo(timezone)
    start = datetime.combine(night, time(0), tzinfo=zone)
    end = datetime.combine(night + timedelta(days=1), time(0), tzinfo=zone)
    return start.astimezone(UTC), end.astimezone(UTC)


def night_of(moment: datetime, timezone: str = "UTC") -> date:
    """The night (local calendar day) that owns an event time."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime")
    return moment.astimezone(ZoneInfo(timezone)).date()


def read_span(
    start: datetime, end: datetime, delivery_margin: timedelta, lookback: timedelta = DEFAULT_LOOKBACK
) -> tuple[datetime, datetime]:
    """What a night's run reads: [start - lookback, end + delivery margin]."""
    return start - lookback, end + delivery_margin


def owns(start: datetime, end: datetime, event_time: datetime) -> bool:
    """Whether the night [start, end) owns an event: the one rule that decides the partition."""
    return start <= event_time < end


def sessions_for_night(
    sessions: Iterable[SessionIdentity], start: datetime, end: datetime
) -> list[SessionIdentity]:
    """The sessions whose audit window overlaps the night: they are extracted again every night until closed."""
    return [session for session in sessions if session.overlaps(start, end)]
