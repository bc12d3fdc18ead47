"""The drift table: one open row per drift item while it lasts, resolved when it ends. The security team reads it
(its columns are a contract, see the README)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from elevation.access.drift import Drift
from elevation.store.tables import drift as drift_table

Row = sa.RowMapping
Key = tuple[str, str, str, str, str]  # principal type, principal id, permission set ARN, account, kind


@dataclass(frozen=True)
class Names:
    """What people call the ids in a drift row."""

    principals: Mapping[tuple[str, str], str]
    permission_sets: Mapping[str, str]  # ARN -> name


def key_of(item: Drift) -> Key:
    a = item.assignment
    return (a.principal_type, a.principal_id, a.permission_set_arn, a.account_id, item.kind.value)


def _key_of_row(row: Row) -> Key:
    return (row["principal_type"], row["principal_id"], row["permission_set_arn"], row["account_id"], row["kind"])


def open_items(conn: sa.Connection) -> list[Row]:
    query = sa.select(drift_table).where(drift_table.c.resolved_at.is_(None)).order_by(drift_table.c.id)
    return list(conn.execute(query).mappings())


def record_run(
    conn: sa.Connection, found: Iterable[Drift], names: Names, *, at: datetime
) -> tuple[list[int], list[int], list[int]]:
    """Merge one run's findings into the table: (opened, still open, resolved) row ids.

    Items seen again keep their row (first_seen_at stays, last_seen_at moves); open items this run no longer sees
    are resolved.
    """
    existing = {_key_of_row(row): row for row in open_items(conn)}
    opened, still, seen = [], [], set()
    for item in found:
        key = key_of(item)
        seen.add(key)
        a = item.assignment
        values = {
            "principal_name": names.principals.get(a.principal),
            "permission_set_name": names.permission_sets.get(a.permission_set_arn),
            "request_id": item.request_id,
            "detail": item.detail,
            "last_seen_at": at,
        }
        if key in existing:
            conn.execute(sa.update(drift_table).where(drift_table.c.id == existing[key]["id"]).values(**values))
            still.append(existing[key]["id"])
        else:
            result = conn.execute(
                sa.insert(drift_table)
                .values(kind=item.kind.value, principal_type=a.principal_type, principal_id=a.principal_id,
                        permission_set_arn=a.permission_set_arn, account_id=a.account_id, first_seen_at=at,
                        **values)
                .returning(drift_table.c.id)
            )
            opened.append(int(result.scalar_one()))
    resolved = []
    for key, row in existing.items():
        if key not in seen:
            resolve(conn, row["id"], at=at, how="no longer observed (fixed outside, or out of the scope now)")
            resolved.append(row["id"])
    return opened, still, resolved


def resolve(conn: sa.Connection, drift_id: int, *, at: datetime, how: str) -> None:
    conn.execute(
        sa.update(drift_table)
        .where(drift_table.c.id == drift_id, drift_table.c.resolved_at.is_(None))
        .values(resolved_at=at, resolution=how)
    )
