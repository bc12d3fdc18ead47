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


def mark_validated(conn: sa.Connection, request_id: int, **values: Any) -> None:
    """Record intake's judgement of a row, once: a second intake that judged it too writes nothing."""
    result = conn.execute(
        sa.update(requests)
        .where(requests.c.id == request_id, requests.c.validated_at.is_(None))
        .values(**values)
    )
    if result.rowcount != 1:
        raise StaleRequest(f"request {request_id} was already validated")


def get_request(conn: sa.Connection, request_id: int) -> Row | None:
    return conn.execute(sa.select(requests).where(requests.c.id == request_id)).mappings().first()


def requests_in(conn: sa.Connection, statuses: Iterable[Status]) -> list[Row]:
    wanted = [Status(status).value for status in statuses]
    return list(
        conn.execute(
            sa.select(requests).where(requests.c.status.in_(wanted)).order_by(requests.c.id)
        ).mappings()
    )


def earlier_request_with_client_id(
    conn: sa.Connection, client_request_id: str, before_id: int, submitted_by: str | None
) -> int | None:
    """The first earlier row of the same writer with this key: keys are unique per writer, so one system cannot
    pre-claim another's."""
    query = sa.select(sa.func.min(requests.c.id)).where(
        requests.c.client_request_id == client_request_id,
        requests.c.id < before_id,
        requests.c.submitted_by.is_not_distinct_from(submitted_by),
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
    where: Sequence[sa.ColumnElement[bool]] = (),
) -> list[Row]:
    """Take up to `limit` rows in `statuses` (and matching `where`) that nobody else holds, for `lease`.

    Rows this same worker holds are taken again: a retried task (same worker id) resumes the work it had claimed
    instead of waiting out its own dead lease.
    """
    wanted = [Status(status).value for status in statuses]
    return _claim(engine, requests, [requests.c.status.in_(wanted), *where], worker, now, lease, limit, skip)


def _claim(
    engine: sa.Engine,
    table: sa.Table,
    conditions: Sequence[sa.ColumnElement[bool]],
    worker: str,
    now: datetime,
    lease: timedelta,
    limit: int,
    skip: Iterable[int],
) -> list[Row]:
    skip = list(skip)
    with engine.begin() as conn:
        query = (
            sa.select(table.c.id)
            .where(
                *conditions,
                sa.or_(
                    table.c.claimed_until.is_(None),
                    table.c.claimed_until < now,
                    table.c.claimed_by == worker,
                ),
                table.c.id.not_in(skip) if skip else sa.true(),
            )
            .order_by(table.c.id)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            query = query.with_for_update(skip_locked=True)
        ids = list(conn.execute(query).scalars())
        if not ids:
            return []
        conn.execute(
            sa.update(table).where(table.c.id.in_(ids)).values(claimed_by=worker, claimed_until=now + lease)
        )
        return list(conn.execute(sa.select(table).where(table.c.id.in_(ids)).order_by(table.c.id)).mappings())


def renew(engine: sa.Engine, request_ids: Iterable[int], worker: str, until: datetime) -> None:
    """Extend this worker's claims while it is still working on them (a dead worker's lapse)."""
    ids = list(request_ids)
    if not ids:
        return
    with engine.begin() as conn:
        conn.execute(
            sa.update(requests)
            .where(requests.c.id.in_(ids), requests.c.claimed_by == worker)
            .values(claimed_until=until)
        )


def release(conn: sa.Connection, request_id: int, worker: str) -> None:
    conn.execute(
        sa.update(requests)
        .where(requests.c.id == request_id, requests.c.claimed_by == worker)
        .values(claimed_by=None, claimed_until=None)
    )


def claim_actions(engine: sa.Engine, *, worker: str, now: datetime, lease: timedelta, limit: int = 500) -> list[Row]:
    """Take unprocessed actions nobody else holds, so each is applied by one worker, once."""
    return _claim(engine, actions, [actions.c.processed_at.is_(None)], worker, now, lease, limit, ())


def release_action(conn: sa.Connection, action_id: int, worker: str) -> None:
    conn.execute(
        sa.update(actions)
        .where(actions.c.id == action_id, actions.c.claimed_by == worker)
        .values(claimed_by=None, claimed_until=None)
    )


def get_action(conn: sa.Connection, action_id: int) -> Row:
    return conn.execute(sa.select(actions).where(actions.c.id == action_id)).mappings().one()


def finish_action(
    conn: sa.Connection, action_id: int, *, worker: str, at: datetime, outcome: str, reason: str | None
) -> None:
    """Write an action's outcome, once: only while this worker holds it and nobody has processed it."""
    result = conn.execute(
        sa.update(actions)
        .where(actions.c.id == action_id, actions.c.processed_at.is_(None), actions.c.claimed_by == worker)
        .values(processed_at=at, outcome=outcome, outcome_reason=reason, claimed_by=None, claimed_until=None)
    )
    if result.rowcount != 1:
        raise StaleRequest(f"action {action_id} was processed or taken over by another worker")


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
    # One atomic upsert: two runs of a job at once must not both find no row and both insert (PostgreSQL raised a
    # unique violation for two concurrent notification senders).
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    statement = insert(heartbeats).values(job=job, **values)
    conn.execute(statement.on_conflict_do_update(index_elements=[heartbeats.c.job], set_=values))
