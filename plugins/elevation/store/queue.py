"""Reading and changing requests. The one place that writes a request's status (through the lifecycle table).

Every status change is a compare-and-set on the row (so two workers cannot both move it) and appends an event
with who or what caused it and when. Claims take the rows a worker is about to act on, atomically: `FOR UPDATE
SKIP LOCKED` on PostgreSQL, `BEGIN IMMEDIATE` on SQLite (see database.py), plus a lease so a crashed worker's
rows are picked up again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from elevation.lifecycle import Status, check_transition
from elevation.store.database import dumps
from elevation.store.tables import actions, events, heartbeats, requests, sessions

Row = sa.RowMapping


class StaleRequest(RuntimeError):
    """The row changed under us (another worker moved it); nothing was written."""


def insert_request(conn: sa.Connection, **values: Any) -> int:
    """Insert a request as an outside system would (the form and the command line use this too)."""
    values.setdefault("status", Status.PENDING.value)
    values.setdefault("revoke_attempts", 0)
    if "created_at" not in values or values["created_at"] is None:
        values.pop("created_at", None)
        values["created_at"] = sa.func.current_timestamp()
    result = conn.execute(sa.insert(requests).values(**values).returning(requests.c.id))
    return int(result.scalar_one())


def insert_action(
    conn: sa.Connection, request_id: int, action: str, actor: str, comment: str | None = None
) -> int:
    result = conn.execute(
        sa.insert(actions)
        .values(
            request_id=request_id,
            action=action,
            actor=actor,
            comment=comment,
            created_at=sa.func.current_timestamp(),
        )
        .returning(actions.c.id)
    )
    return int(result.scalar_one())


def record_event(
    conn: sa.Connection,
    *,
    at: datetime,
    kind: str,
    actor: str,
    request_id: int | None = None,
    from_status: str | None = None,
    to_status: str | None = None,
    reason_code: str | None = None,
    detail: Any = None,
) -> None:
    conn.execute(
        sa.insert(events).values(
            at=at,
            kind=kind,
            actor=actor,
            request_id=request_id,
            from_status=from_status,
            to_status=to_status,
            reason_code=reason_code,
            detail=None if detail is None else dumps(detail),
        )
    )


def transition(
    conn: sa.Connection,
    request_id: int,
    *,
    expected: Status | str,
    target: Status | str,
    reason_code: str,
    actor: str,
    at: datetime,
    reason: str | None = None,
    detail: Any = None,
    **updates: Any,
) -> None:
    """Move a request from `expected` to `target`, if the lifecycle allows it and nobody moved it first."""
    expected, target = Status(expected), Status(target)
    check_transition(expected, target, reason_code)
    result = conn.execute(
        sa.update(requests)
        .where(requests.c.id == request_id, requests.c.status == expected.value)
        .values(status=target.value, reason_code=reason_code, status_reason=reason, updated_at=at, **updates)
    )
    if result.rowcount != 1:
        raise StaleRequest(f"request {request_id} is no longer {expected}")
    record_event(
        conn,
        at=at,
        kind="transition",
        actor=actor,
        request_id=request_id,
        from_status=expected.value,
        to_status=target.value,
        reason_code=reason_code,
        detail={"reason": reason, **(detail or {})} if reason or detail else None,
    )


def update_request(conn: sa.Connection, request_id: int, **values: Any) -> None:
    """Change bookkeeping columns (never status: that is :func:`transition`'s job)."""
    if "status" in values:
        raise ValueError("status changes go through transition()")
    conn.execute(sa.update(requests).where(requests.c.id == request_id).values(**values))


def get_request(conn: sa.Connection, request_id: int) -> Row | None:
    return conn.execute(sa.select(requests).where(requests.c.id == request_id)).mappings().first()


def requests_in(conn: sa.Connection, statuses: Iterable[Status]) -> list[Row]:
    wanted = [Status(status).value for status in statuses]
    return list(
        conn.execute(
            sa.select(requests).where(requests.c.status.in_(wanted)).order_by(requests.c.id)
        ).mappings()
    )


def unvalidated_requests(conn: sa.Connection) -> list[Row]:
    query = sa.select(requests).where(requests.c.validated_at.is_(None)).order_by(requests.c.id)
    return list(conn.execute(query).mappings())


def earlier_request_with_client_id(conn: sa.Connection, client_request_id: str, before_id: int) -> int | None:
    query = sa.select(sa.func.min(requests.c.id)).where(
        requests.c.client_request_id == client_request_id, requests.c.id < before_id
    )
    return conn.execute(query).scalar()


def claim(
    engine: sa.Engine,
    *,
    statuses: Sequence[Status],
    worker: str,
    now: datetime,
    lease: timedelta,
    limit: int = 500,
    skip: Iterable[int] = (),
) -> list[Row]:
    """Take up to `limit` rows in `statuses` that nobody holds (and not in `skip`), for `lease`."""
    wanted = [Status(status).value for status in statuses]
    skip = list(skip)
    with engine.begin() as conn:
        query = (
            sa.select(requests.c.id)
            .where(
                requests.c.status.in_(wanted),
                sa.or_(requests.c.claimed_until.is_(None), requests.c.claimed_until < now),
                requests.c.id.not_in(skip) if skip else sa.true(),
            )
            .order_by(requests.c.id)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(conn.execute(query).scalars())
        if not ids:
            return []
        conn.execute(
            sa.update(requests)
            .where(requests.c.id.in_(ids))
            .values(claimed_by=worker, claimed_until=now + lease)
        )
        return list(
            conn.execute(sa.select(requests).where(requests.c.id.in_(ids)).order_by(requests.c.id)).mappings()
        )


def release(conn: sa.Connection, request_id: int, worker: str) -> None:
    conn.execute(
        sa.update(requests)
        .where(requests.c.id == request_id, requests.c.claimed_by == worker)
        .values(claimed_by=None, claimed_until=None)
    )


def unprocessed_actions(conn: sa.Connection) -> list[Row]:
    query = sa.select(actions).where(actions.c.processed_at.is_(None)).order_by(actions.c.id)
    return list(conn.execute(query).mappings())


def get_action(conn: sa.Connection, action_id: int) -> Row:
    return conn.execute(sa.select(actions).where(actions.c.id == action_id)).mappings().one()


def finish_action(
    conn: sa.Connection, action_id: int, *, at: datetime, outcome: str, reason: str | None
) -> None:
    conn.execute(
        sa.update(actions)
        .where(actions.c.id == action_id)
        .values(processed_at=at, outcome=outcome, outcome_reason=reason)
    )


# --- sessions -----------------------------------------------------------------------------------------------


def session_for(conn: sa.Connection, request_id: int) -> Row | None:
    return conn.execute(sa.select(sessions).where(sessions.c.request_id == request_id)).mappings().first()


def create_session(conn: sa.Connection, **values: Any) -> None:
    conn.execute(sa.insert(sessions).values(**values))


def update_session(conn: sa.Connection, request_id: int, **values: Any) -> None:
    conn.execute(sa.update(sessions).where(sessions.c.request_id == request_id).values(**values))


def sessions_with_status(conn: sa.Connection, statuses: Iterable[Status]) -> list[Row]:
    """Sessions joined with their request's status, end and id."""
    wanted = [Status(status).value for status in statuses]
    query = (
        sa.select(sessions, requests.c.status, requests.c.end_at, requests.c.requester)
        .join(requests, requests.c.id == sessions.c.request_id)
        .where(requests.c.status.in_(wanted))
        .order_by(sessions.c.request_id)
    )
    return list(conn.execute(query).mappings())


# --- heartbeats ---------------------------------------------------------------------------------------------


def beat(
    conn: sa.Connection, job: str, *, at: datetime, as_of: datetime, outcome: str, detail: Any = None
) -> None:
    """Record that `job` ran; an outside monitor alerts when last_run_at gets old or outcome is not ok."""
    values = {
        "last_run_at": at,
        "as_of": as_of,
        "outcome": outcome,
        "detail": None if detail is None else dumps(detail),
    }
    updated = conn.execute(sa.update(heartbeats).where(heartbeats.c.job == job).values(**values))
    if updated.rowcount == 0:
        conn.execute(sa.insert(heartbeats).values(job=job, **values))
