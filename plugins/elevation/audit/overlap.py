"""Sessions that share an assignment: when it was really removed, and which events belong to several sessions.

Two sessions of the same user, permission set and account hold one assignment: the first to end keeps it for the
other (and a standing assignment keeps it for good). The first one's credential tail therefore starts when the
assignment was actually removed, not at its own end, and the events inside both windows are both sessions' (CloudTrail
cannot tell them apart): each report marks them as shared, naming the other session, instead of presenting them as
its own alone. Pure functions over session rows and event tables.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

Pair = tuple[str, str, str, str]  # account, permission set ARN, principal type, principal id


def _pair(row: Mapping[str, Any]) -> Pair:
    return (row["account_id"], row["permission_set_arn"], row["principal_type"], row["principal_id"])


def actual_removals(rows: Iterable[Mapping[str, Any]]) -> dict[str, tuple[datetime | None, str | None]]:
    """session id -> (when its assignment was actually removed, why it outlived the session).

    A session whose own revoke removed the assignment: (that time, None). A session whose assignment was kept
    (`kept_because`): the first removal by a session of the same assignment at or after this one ended, with the
    reason; None as the time while nothing has removed it (a standing assignment, or the other session still on)."""
    rows = list(rows)
    removed_by_pair: dict[Pair, list[datetime]] = defaultdict(list)
    for row in rows:
        if row["assignment_removed_at"] is not None:
            removed_by_pair[_pair(row)].append(row["assignment_removed_at"])
    result: dict[str, tuple[datetime | None, str | None]] = {}
    for row in rows:
        session_id = str(row["request_id"])
        if row["assignment_removed_at"] is not None:
            result[session_id] = (row["assignment_removed_at"], None)
            continue
        kept = row.get("kept_because")
        if not kept:
            result[session_id] = (None, None)  # not removed yet (still on, or a revoke still failing)
            continue
        ended = row.get("ended_at") or row["granted_at"]
        later = sorted(moment for moment in removed_by_pair[_pair(row)] if moment >= ended)
        result[session_id] = (later[0] if later else None, kept.removeprefix("kept: "))
    return result


def shared_events(events: pa.Table) -> dict[str, dict[str, tuple[str, ...]]]:
    """session id -> {eventID -> the other sessions that hold the same event}, for events held by several."""
    if not events.num_rows:
        return {}
    pairs = events.select(["eventID", "session_id"])
    counts = pairs.group_by("eventID").aggregate([("session_id", "count_distinct")])
    repeated = counts.filter(pc.greater(counts["session_id_count_distinct"], 1)).column("eventID")
    if not len(repeated):
        return {}
    held = pairs.filter(pc.is_in(pairs["eventID"], value_set=repeated.combine_chunks()))
    by_event: dict[str, set[str]] = defaultdict(set)
    for event_id, session_id in zip(held.column("eventID").to_pylist(), held.column("session_id").to_pylist(),
                                    strict=True):
        by_event[event_id].add(str(session_id))
    result: dict[str, dict[str, tuple[str, ...]]] = defaultdict(dict)
    for event_id, holders in by_event.items():
        for session_id in holders:
            result[session_id][event_id] = tuple(sorted(holders - {session_id}, key=_numeric_first))
    return dict(result)


def _numeric_first(session_id: str) -> tuple[int, str]:
    return (int(session_id), "") if session_id.isdigit() else (1 << 62, session_id)
