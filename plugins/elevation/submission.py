"""Filing a request from the trigger form or the command line: the same row an outside system would insert.

Only the shape is checked here (types, required fields); policy is checked by intake, like for every writer.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from elevation.store import queue
from elevation.store.database import parse_time

FIELDS = (
    "requester",
    "account_id",
    "permission_set",
    "principal_group",
    "start_at",
    "duration_minutes",
    "justification",
    "ticket",
    "client_request_id",
)


class SubmissionError(ValueError):
    """The submitted fields are unusable as a row; the message names the field."""


def submit(engine: sa.Engine, fields: dict[str, Any]) -> int:
    row = {name: fields.get(name) for name in FIELDS}
    for name in ("principal_group", "start_at", "justification", "ticket", "client_request_id"):
        if row[name] in ("", None):
            row[name] = None
    for name in ("requester", "account_id", "permission_set"):
        if not row[name] or not str(row[name]).strip():
            raise SubmissionError(f"{name} is required")
        row[name] = str(row[name]).strip()
    try:
        row["duration_minutes"] = int(row["duration_minutes"])
    except (TypeError, ValueError) as error:
        raise SubmissionError(
            f"duration_minutes must be a whole number, not {row['duration_minutes']!r}"
        ) from error
    if row["start_at"] is not None:
        start = parse_time(row["start_at"])
        if not isinstance(start, datetime):
            raise SubmissionError(f"start_at {row['start_at']!r} is not an ISO 8601 time")
        row["start_at"] = start
    with engine.begin() as conn:
        return queue.insert_request(conn, **row)
