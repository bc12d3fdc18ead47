"""What one run of a job works with: configuration, the queue database, Identity Center, and its clock.

A run acts as of its logical time (`as_of`), so it can be replayed for any moment, with two safety rules against
the real clock: never grant access whose end has passed, and revoke everything whose end has passed, by either
clock. Jobs get a Runtime from :func:`runtime_for_run` (production) or build one directly (tests, demo).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy.engine import Engine

from elevation.access.policy import Policy
from elevation.config import ElevationConfig, load_config
from elevation.identity_center import IdentityCenter
from elevation.store import queue
from elevation.store.database import create_engine_for_url, url_from_airflow_connection
from elevation.store.migrations import upgrade

log = logging.getLogger(__name__)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    config: ElevationConfig
    engine: Engine
    identity_center_factory: Callable[[Runtime], IdentityCenter]
    as_of: datetime
    actor: str
    clock: Callable[[], datetime] = utcnow
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic  # for poll bounds; a simulation drives it with its own clock
    worker: str = field(default_factory=lambda: f"worker-{time.monotonic_ns()}")

    @property
    def policy(self) -> Policy:
        return self.config.policy

    @cached_property
    def identity_center(self) -> IdentityCenter:
        return self.identity_center_factory(self)

    @property
    def lease(self) -> timedelta:
        """How long a claim on a row lasts without renewal: the longest a live worker goes between renewals (one
        confirmation's bound plus a poll interval), so a dead worker's rows are picked up again soon after."""
        grants = self.policy.grants
        return max(grants.status_wait_bound + 2 * grants.status_poll_max, timedelta(minutes=1))

    def organization_accounts(self) -> dict[str, str]:
        """Account id -> name of every account of the organization (one paged ListAccounts), or {} with a warning
        when it cannot be listed: a report without the names is still a report."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return self.identity_center.organization_accounts()
        except (ClientError, BotoCoreError) as error:
            log.warning("could not list the organization's accounts: %s", error)
            return {}

    def now(self) -> datetime:
        """The real clock (for bookkeeping timestamps)."""
        return self.clock()

    def latest(self) -> datetime:
        """The later of the logical and the real time: what safety rules compare against."""
        return max(self.as_of, self.clock())

    def record_aws_call(self, operation: str, attempt: int, error: BaseException | None) -> None:
        """Every AWS call and its outcome goes to the event log (the system's own audit trail)."""
        from elevation.aws import error_code

        detail: dict[str, Any] = {"operation": operation, "attempt": attempt}
        if error is not None:
            detail["error"] = error_code(error)
            detail["message"] = str(error)[:500]
        with self.engine.begin() as conn:
            queue.record_event(
                conn,
                at=self.now(),
                kind="aws_call",
                actor=self.actor,
                reason_code="error" if error else "ok",
                detail=detail,
            )


def identity_center_from_airflow(runtime: Runtime) -> IdentityCenter:
    from elevation.aws import clients_from_airflow

    settings = runtime.policy.identity_center
    clients = clients_from_airflow(runtime.config.connections.aws, settings.region)
    return IdentityCenter(
        clients=clients, settings=settings, sleep=runtime.sleep, on_attempt=runtime.record_aws_call
    )


def runtime_for_run(context: dict[str, Any], job: str) -> Runtime:
    """Build the Runtime of an Airflow task from its context: logical date (or run_after), connections, config."""
    config = load_config()
    engine = create_engine_for_url(url_from_airflow_connection(config.connections.database))
    upgrade(engine)
    as_of = context.get("logical_date") or context.get("data_interval_end") or context["dag_run"].run_after
    dag_run = context.get("dag_run")
    run_id = getattr(dag_run, "run_id", "manual")
    task_id = getattr(context.get("ti"), "task_id", "task")
    return Runtime(
        config=config,
        engine=engine,
        identity_center_factory=identity_center_from_airflow,
        as_of=as_of.astimezone(UTC),
        actor=f"dag:{job}/{run_id}",
        # The same for every try of this task: a retry takes back, at once, the rows its killed try had claimed.
        worker=f"{job}/{run_id}/{task_id}",
    )
