"""Read or write, and the per-session flags that are about a session's facts rather than one event (not Sigma).

Read versus write comes from CloudTrail's own `readOnly` field wherever it is present: AWS knows which of its calls
change state, a name prefix only guesses (the write-up's Get/Describe/List filter hid nothing dangerous by accident
but would hide a `GetSecretValue` from the write view; that is fine, because rules see every event). Only when
`readOnly` is absent (old eventVersions, some services, hand-made fixtures) is the name used.

The session flags are pure functions of the session's events and facts (granted account, end of the assignment):
  * failed calls: bursts of AccessDenied / UnauthorizedOperation (N within M minutes): someone probing;
  * outside the account: events whose recipientAccountId is not the account the session was granted for;
  * credential tail: events after the assignment was removed, made with role credentials issued before it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa

from elevation.cloudtrail.schema import parse_event_time

#: Name prefixes of calls that only read (followed by an upper-case letter or the end: `Listen...` is not `List`).
READ_PREFIXES: tuple[str, ...] = (
    "Get", "Describe", "List", "Head", "Lookup", "Search", "Scan", "Query", "BatchGet", "BatchDescribe", "Select",
    "View", "Preview", "Estimate", "Check", "Validate",
)  # fmt: skip
_READ_NAME = re.compile(r"^(?:" + "|".join(READ_PREFIXES) + r")(?:[A-Z0-9]|$)")
#: Named like reads, but they mint credentials or change state: writes when `readOnly` is absent.
WRITE_EXCEPTIONS: frozenset[str] = frozenset(
    {
        "GetSessionToken",
        "GetFederationToken",
        "GetRoleCredentials",
        "GetSigninToken",
        "GetTemporaryGlueTableCredentials",
        "GetClusterCredentials",
        "GetAuthorizationToken",
    }
)
#: Not named like reads, but they only read: reads when `readOnly` is absent.
READ_EXCEPTIONS: frozenset[str] = frozenset(
    {"Decrypt", "Encrypt", "GenerateDataKey", "GenerateDataKeyWithoutPlaintext", "GenerateRandom", "Verify",
     "FilterLogEvents", "BatchGetItem", "DownloadDBLogFilePortion"}
)  # fmt: skip

_VERSION_SUFFIX = re.compile(r"20\d{6}(?:v\d+)?$")

#: Error codes of a refused call (the service said no to this principal).
DENIED_CODES: frozenset[str] = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "Client.UnauthorizedOperation",
        "UnauthorizedAccess",
        "AuthorizationError",
        "AuthorizationErrorException",
        "Forbidden",
        "ForbiddenException",
        "NotAuthorized",
        "NotAuthorizedException",
    }
)


def read_only_from_name(event_name: str) -> bool:
    """The guess from the name alone (API version suffixes ignored)."""
    name = _VERSION_SUFFIX.sub("", event_name or "") or (event_name or "")
    if name in WRITE_EXCEPTIONS:
        return False
    if name in READ_EXCEPTIONS:
        return True
    return bool(_READ_NAME.match(name))


def is_read_only(read_only: Any, event_name: str | None) -> bool:
    """`readOnly` when CloudTrail wrote it (bool or "true"/"false"), else the name."""
    if isinstance(read_only, bool):
        return read_only
    if isinstance(read_only, str) and read_only.strip().lower() in ("true", "false"):
        return read_only.strip().lower() == "true"
    return read_only_from_name(event_name or "")


def is_denied(error_code: str | None) -> bool:
    if not error_code:
        return False
    return error_code in DENIED_CODES or "AccessDenied" in error_code or "Unauthorized" in error_code


# ---------------------------------------------------------------------------------------------------------------
# The few facts of an event the session view needs


@dataclass(frozen=True)
class EventFacts:
    """One event reduced to what the session view and flags look at."""

    event_id: str
    event_time: datetime
    event_source: str
    event_name: str
    read_only: bool
    error_code: str | None
    recipient_account_id: str | None
    aws_region: str | None = None
    source_ip: str | None = None
    user_agent: str | None = None

    @property
    def failed(self) -> bool:
        return bool(self.error_code)


def facts_from_record(record: dict[str, Any]) -> EventFacts:
    name = str(record.get("eventName") or "")
    return EventFacts(
        event_id=str(record.get("eventID") or ""),
        event_time=parse_event_time(record["eventTime"]),
        event_source=str(record.get("eventSource") or ""),
        event_name=name,
        read_only=is_read_only(record.get("readOnly"), name),
        error_code=record.get("errorCode") or None,
        recipient_account_id=record.get("recipientAccountId") or None,
        aws_region=record.get("awsRegion"),
        source_ip=record.get("sourceIPAddress"),
        user_agent=record.get("userAgent"),
    )


def facts_from_table(table: pa.Table) -> list[EventFacts]:
    """The same from a table of EVENT_SCHEMA, sorted by time: column by column (a session can hold a hundred
    thousand events; a dict per row cost more than the rest of its report)."""
    from elevation.audit.engine import column_times, column_values

    def column(name: str) -> list[Any]:
        return column_values(table.column(name)) if name in table.column_names else [None] * table.num_rows

    names = [str(name or "") for name in column("eventName")]
    facts = list(map(
        EventFacts,
        [str(value or "") for value in column("eventID")],
        column_times(table.column("eventTime")),
        [str(value or "") for value in column("eventSource")],
        names,
        [is_read_only(value, name) for value, name in zip(column("readOnly"), names, strict=True)],
        [value or None for value in column("errorCode")],
        [value or None for value in column("recipientAccountId")],
        column("awsRegion"),
        column("sourceIPAddress"),
        column("userAgent"),
    ))
    facts.sort(key=lambda fact: (fact.event_time, fact.event_id))
    return facts


def facts_from_records(records: Iterable[dict[str, Any]]) -> list[EventFacts]:
    return sorted(
        (facts_from_record(record) for record in records),
        key=lambda facts: (facts.event_time, facts.event_id),
    )


# ---------------------------------------------------------------------------------------------------------------
# Flags


@dataclass(frozen=True)
class SessionFlag:
    """Something about the session as a whole that a reviewer must look at."""

    kind: str  # failed_calls | outside_account | after_end
    severity: str
    summary: str
    event_ids: tuple[str, ...] = ()
    first_time: datetime | None = None
    last_time: datetime | None = None
    details: tuple[str, ...] = field(default=())


def failed_call_bursts(
    events: Sequence[EventFacts],
    threshold: int = 5,
    window: timedelta = timedelta(minutes=5),
) -> list[SessionFlag]:
    """Refused calls, `threshold` or more within `window`: one flag per burst (overlapping windows merged)."""
    denied = sorted(
        (event for event in events if is_denied(event.error_code)), key=lambda event: event.event_time
    )
    bursts: list[list[EventFacts]] = []
    start = 0
    for end in range(len(denied)):
        while denied[end].event_time - denied[start].event_time > window:
            start += 1
        if end - start + 1 >= threshold:
            members = denied[start : end + 1]
            if bursts and bursts[-1][-1].event_time >= members[0].event_time:
                known = {id(event) for event in bursts[-1]}
                bursts[-1].extend(event for event in members if id(event) not in known)
            else:
                bursts.append(list(members))
    flags = []
    for burst in bursts:
        calls = sorted({f"{event.event_source.split('.')[0]}:{event.event_name}" for event in burst})
        minutes = max(1, round((burst[-1].event_time - burst[0].event_time).total_seconds() / 60))
        flags.append(
            SessionFlag(
                kind="failed_calls",
                severity="medium",
                summary=f"{len(burst)} refused calls within {minutes} min",
                event_ids=tuple(event.event_id for event in burst),
                first_time=burst[0].event_time,
                last_time=burst[-1].event_time,
                details=tuple(calls),
            )
        )
    return flags


def outside_account(events: Sequence[EventFacts], granted_account: str) -> list[SessionFlag]:
    """Events recorded in another account than the one the session was granted for (a role chained elsewhere)."""
    others = [
        event
        for event in events
        if event.recipient_account_id and event.recipient_account_id != granted_account
    ]
    if not others:
        return []
    accounts = sorted({event.recipient_account_id for event in others if event.recipient_account_id})
    return [
        SessionFlag(
            kind="outside_account",
            severity="high",
            summary=f"{len(others)} events in other accounts than {granted_account}: {', '.join(accounts)}",
            event_ids=tuple(event.event_id for event in others),
            first_time=min(event.event_time for event in others),
            last_time=max(event.event_time for event in others),
            details=tuple(accounts),
        )
    ]


def after_end(events: Sequence[EventFacts], ended_at: datetime | None) -> list[SessionFlag]:
    """Events after the assignment was removed: the credential tail (role credentials outlive the assignment)."""
    if ended_at is None:
        return []
    late = [event for event in events if event.event_time > ended_at]
    if not late:
        return []
    writes = sum(1 for event in late if not event.read_only)
    last = max(event.event_time for event in late)
    minutes = int((last - ended_at).total_seconds() // 60)
    return [
        SessionFlag(
            kind="after_end",
            severity="high" if writes else "medium",
            summary=(
                f"{len(late)} events ({writes} writes) after the assignment was removed, "
                + (f"up to {minutes} min later" if minutes else "within a minute")
            ),
            event_ids=tuple(event.event_id for event in late),
            first_time=min(event.event_time for event in late),
            last_time=last,
        )
    ]


def session_flags(
    events: Sequence[EventFacts],
    granted_account: str | None,
    ended_at: datetime | None,
    burst_threshold: int = 5,
    burst_window: timedelta = timedelta(minutes=5),
) -> list[SessionFlag]:
    """All per-session flags, in a stable order."""
    flags = failed_call_bursts(events, burst_threshold, burst_window)
    if granted_account:
        flags += outside_account(events, granted_account)
    flags += after_end(events, ended_at)
    return flags
