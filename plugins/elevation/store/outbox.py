"""The notification outbox: messages waiting for Slack, delivered once each.

Enqueue is idempotent: a row's `dedup_key` names the event and the recipient, and inserting a key that exists
does nothing (`ON CONFLICT DO NOTHING` on SQLite and PostgreSQL), so a producer that runs twice over the same
events enqueues each message once. A sender claims due `pending` rows the way the queue claims requests (`FOR
UPDATE SKIP LOCKED` / `BEGIN IMMEDIATE`, plus a lease), and writes the outcome only while it still holds the row.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from elevation.store.queue import Row, _claim
from elevation.store.tables import notify_cursors, outbox

PENDING, SENT, SKIPPED, FAILED = "pending", "sent", "skipped", "failed"
STATES = (PENDING, SENT, SKIPPED, FAILED)


@dataclass(frozen=True)
class Entry:
    dedup_key: str
    kind: str
    recipient: str
    payload: dict[str, Any]
    request_id: int | None = None
    state: str = PENDING  # SKIPPED when it is known up front that it cannot be delivered
    last_error: str | None = None


def enqueue(conn: sa.Connection, entries: Sequence[Entry], *, now: datetime) -> int:
    """Insert the entries whose key is new; returns how many were new."""
    if not entries:
        return 0
    dialect = conn.dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    added = 0
    for entry in entries:
        statement = insert(outbox).values(
            dedup_key=entry.dedup_key[:255], kind=entry.kind, request_id=entry.request_id, recipient=entry.recipient,
            payload=json.dumps(entry.payload, ensure_ascii=False), state=entry.state, attempts=0,
            next_attempt_at=now, last_error=entry.last_error, created_at=now,
        ).on_conflict_do_nothing(index_elements=["dedup_key"])
        added += conn.execute(statement).rowcount or 0
    return added


def claim_due(engine: sa.Engine, *, worker: str, now: datetime, lease: timedelta, limit: int = 200) -> list[Row]:
    """Take pending rows whose time has come that nobody else holds (this worker's own are taken again)."""
    conditions = [outbox.c.state == PENDING, outbox.c.next_attempt_at <= now]
    return _claim(engine, outbox, conditions, worker, now, lease, limit, ())


def hold(conn: sa.Connection, row_id: int, worker: str, *, now: datetime, lease: timedelta) -> bool:
    """Renew this worker's claim on a pending row just before sending it; False when the row is no longer this
    worker's (its lease ran out and another sender took it, or it is finished): then it must not be sent."""
    result = conn.execute(
        sa.update(outbox)
        .where(outbox.c.id == row_id, outbox.c.state == PENDING, outbox.c.claimed_by == worker)
        .values(claimed_until=now + lease)
    )
    return result.rowcount == 1


def _finish(conn: sa.Connection, row_id: int, worker: str, **values: Any) -> bool:
    result = conn.execute(
        sa.update(outbox)
        .where(outbox.c.id == row_id, outbox.c.state == PENDING, outbox.c.claimed_by == worker)
        .values(claimed_by=None, claimed_until=None, **values)
    )
    return result.rowcount == 1


def mark_sent(conn: sa.Connection, row_id: int, worker: str, *, at: datetime, channel: str, ts: str,
              attempts: int) -> bool:
    return _finish(conn, row_id, worker, state=SENT, sent_at=at, slack_channel=channel, slack_ts=ts,
                   attempts=attempts, last_error=None)


def mark_skipped(conn: sa.Connection, row_id: int, worker: str, *, attempts: int, reason: str) -> bool:
    return _finish(conn, row_id, worker, state=SKIPPED, attempts=attempts, last_error=reason[:2000])


def mark_failed(conn: sa.Connection, row_id: int, worker: str, *, attempts: int, reason: str) -> bool:
    return _finish(conn, row_id, worker, state=FAILED, attempts=attempts, last_error=reason[:2000])


def reschedule(conn: sa.Connection, row_id: int, worker: str, *, at: datetime, attempts: int,
               reason: str | None) -> bool:
    """Back to pending, due at `at`, released."""
    return _finish(conn, row_id, worker, next_attempt_at=at, attempts=attempts,
                   last_error=None if reason is None else reason[:2000])


def get(conn: sa.Connection, row_id: int) -> Row:
    return conn.execute(sa.select(outbox).where(outbox.c.id == row_id)).mappings().one()


def rows(conn: sa.Connection, *where: sa.ColumnElement[bool]) -> list[Row]:
    return list(conn.execute(sa.select(outbox).where(*where).order_by(outbox.c.id)).mappings())


def payload(row: Row) -> dict[str, Any]:
    return dict(json.loads(row["payload"]))


@dataclass(frozen=True)
class Backlog:
    """What the heartbeat shows: messages not delivered, and the stuck ones (pending too long, or failed)."""

    pending: int
    stuck: list[int]  # ids pending since before the threshold
    failed: list[int]  # ids that failed since `since`
    oldest_pending_at: datetime | None

    @property
    def ok(self) -> bool:
        return not self.stuck and not self.failed

    def detail(self) -> dict[str, Any]:
        return {"pending": self.pending, "stuck": self.stuck[:50], "failed": self.failed[:50],
                "oldest_pending_at": self.oldest_pending_at}


def backlog(conn: sa.Connection, *, now: datetime, stuck_after: timedelta, since: datetime) -> Backlog:
    pending = rows(conn, outbox.c.state == PENDING)
    failed = rows(conn, outbox.c.state == FAILED, outbox.c.created_at >= since)
    return Backlog(
        pending=len(pending),
        stuck=[row["id"] for row in pending if row["created_at"] <= now - stuck_after],
        failed=[row["id"] for row in failed],
        oldest_pending_at=min((row["created_at"] for row in pending), default=None),
    )


# --- the producer's cursors ---------------------------------------------------------------------------------


def cursor(conn: sa.Connection, name: str) -> int | None:
    return conn.execute(sa.select(notify_cursors.c.position).where(notify_cursors.c.name == name)).scalar()


def set_cursor(conn: sa.Connection, name: str, position: int, *, at: datetime) -> None:
    updated = conn.execute(
        sa.update(notify_cursors).where(notify_cursors.c.name == name).values(position=position, updated_at=at)
    )
    if updated.rowcount == 0:
        conn.execute(sa.insert(notify_cursors).values(name=name, position=position, updated_at=at))
