"""What the queue database and Identity Center hold after a step, read beside the system, never through it.

Identity Center is read from the emulator's own record of every CreateAccountAssignment and
DeleteAccountAssignment it accepted (in order), not with list calls: a read through the wire would consume the
faults a step injected, and would show the emulator's duplicate copies. AWS does not keep copies (creating an
existing assignment is a success, not a second one; a deletion removes it), so whether access exists is replayed
from that record with AWS's meaning; moto's copy count is shown beside it in messages.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa

from elevation.devkit.emulator import MOTO_ACCOUNT_ID, AwsEmulator
from elevation.devkit.world import World
from elevation.store.database import UtcDateTime, parse_time
from elevation.store.tables import actions, events, requests, sessions


class Triple(NamedTuple):
    """An Identity Center account assignment: what exists or not."""

    account_id: str
    permission_set_arn: str
    principal_type: str
    principal_id: str


def triple_of(row: Any) -> Triple:
    """The assignment of a session row (or anything with the same four keys)."""
    return Triple(row["account_id"], row["permission_set_arn"], row["principal_type"], row["principal_id"])


@dataclass(frozen=True)
class AwsRequest:
    """One Create/DeleteAccountAssignment the emulator accepted (faulted calls never get this far)."""

    kind: str  # creation | deletion
    request_id: str
    triple: Triple
    failed: bool  # ends FAILED: a failed creation never existed, a failed deletion removed nothing


def aws_requests(emulator: AwsEmulator) -> list[AwsRequest]:
    """Every accepted creation and deletion since the emulator was reset, in the order they arrived."""
    control = emulator.identity_center
    with emulator._lock:  # the emulator's request table: the one record of what AWS was asked to change
        recorded = list(control._requests.values())
    out = []
    for item in recorded:
        a = item.assignment
        triple = Triple(a["TargetId"], a["PermissionSetArn"], a["PrincipalType"], a["PrincipalId"])
        out.append(AwsRequest(item.kind, item.request_id, triple, item.failure_reason is not None))
    return out


def present(history: list[AwsRequest]) -> set[Triple]:
    """Assignments that exist, with AWS's meaning: the last successful creation or deletion of each decides."""
    exists: set[Triple] = set()
    for item in history:
        if item.failed:
            continue
        if item.kind == "creation":
            exists.add(item.triple)
        else:
            exists.discard(item.triple)
    return exists


def moto_copies(emulator: AwsEmulator) -> Counter[Triple]:
    """How many copies moto holds of each assignment (the emulator keeps duplicates; AWS would not)."""
    from moto.ssoadmin.models import ssoadmin_backends

    with emulator._lock:
        backend = ssoadmin_backends[MOTO_ACCOUNT_ID][emulator.region]
        return Counter(
            Triple(a.target_id, a.permission_set_arn, a.principal_type, a.principal_id)
            for a in backend.account_assignments
        )


@dataclass
class Names:
    """Readable names for the world's ids, for messages a person can act on."""

    world: World

    def triple(self, triple: Triple) -> str:
        accounts = {v: k for k, v in self.world.accounts.items()}
        sets = {v: k for k, v in self.world.permission_sets.items()}
        principals = {v: k for k, v in {**self.world.users, **self.world.groups}.items()}
        return (
            f"{triple.principal_type} {principals.get(triple.principal_id, triple.principal_id)} / "
            f"{sets.get(triple.permission_set_arn, triple.permission_set_arn)} / "
            f"{accounts.get(triple.account_id, triple.account_id)}"
        )


@dataclass
class EventLog:
    """The append-only event log, read incrementally (it only grows), reduced to what the invariants need."""

    last_id: int = 0
    transitions: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # request id -> in order
    by_action: dict[int, list[int]] = field(default_factory=dict)  # action id -> transition event ids
    aws_ok: Counter[str] = field(default_factory=Counter)  # operation -> successful attempts logged

    def read_new(self, conn: sa.Connection) -> None:
        rows = conn.execute(sa.select(events).where(events.c.id > self.last_id).order_by(events.c.id)).mappings()
        for row in rows:
            self.last_id = row["id"]
            detail = _json(row["detail"])
            if row["kind"] == "transition" and row["request_id"] is not None:
                self.transitions.setdefault(row["request_id"], []).append(dict(row))
                if isinstance(detail, dict) and "action_id" in detail:
                    self.by_action.setdefault(int(detail["action_id"]), []).append(row["id"])
            elif row["kind"] == "aws_call" and row["reason_code"] == "ok" and isinstance(detail, dict):
                self.aws_ok[str(detail.get("operation"))] += 1


@dataclass
class Snapshot:
    """Everything the invariants look at, at one moment of the simulated day."""

    at: datetime
    requests: dict[int, dict[str, Any]]
    sessions: dict[int, dict[str, Any]]  # by request id
    actions: list[dict[str, Any]]
    log: EventLog
    history: list[AwsRequest]
    present: set[Triple]
    copies: Counter[Triple]

    def sessions_on(self, triple: Triple) -> list[dict[str, Any]]:
        return [s for s in self.sessions.values() if triple_of(s) == triple]

    def status_of(self, request_id: int) -> str | None:
        row = self.requests.get(request_id)
        return None if row is None else row["status"]


def _request_columns(dialect: str) -> list[Any]:
    """The request columns the invariants read (not the big free text). On PostgreSQL times come as text, parsed
    leniently here: a hostile row's year 10000 must not stop the simulation from seeing what the system did."""
    out: list[Any] = []
    for column in requests.c:
        if column.name in ("justification", "ticket"):
            continue
        if dialect == "postgresql" and isinstance(column.type, UtcDateTime):
            out.append(sa.type_coerce(sa.cast(column, sa.Text), _LenientTime()).label(column.name))
        else:
            out.append(column)
    return out


class _LenientTime(sa.types.TypeDecorator):
    impl = sa.Text
    cache_ok = True

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> Any:
        return parse_time(value)


def snapshot(engine: sa.Engine, emulator: AwsEmulator, log: EventLog, at: datetime) -> Snapshot:
    with engine.connect() as conn:
        log.read_new(conn)
        wanted = _request_columns(conn.dialect.name)
        request_rows = {row["id"]: dict(row) for row in conn.execute(sa.select(*wanted)).mappings()}
        session_rows = {row["request_id"]: dict(row) for row in conn.execute(sa.select(sessions)).mappings()}
        action_rows = [dict(row) for row in conn.execute(sa.select(actions).order_by(actions.c.id)).mappings()]
    history = aws_requests(emulator)
    return Snapshot(
        at=at,
        requests=request_rows,
        sessions=session_rows,
        actions=action_rows,
        log=log,
        history=history,
        present=present(history),
        copies=moto_copies(emulator),
    )


def _json(text: str | None) -> Any:
    if not text:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None
