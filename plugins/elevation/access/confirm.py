"""Wait for asynchronous Identity Center requests to reach a terminal status, a bounded number at a time.

Both grants and revocations start a request, then poll its status with backoff until SUCCEEDED or FAILED or a
time bound. At most `max_in_flight` requests are outstanding at once (AWS allows 10 assignment creations in
flight per instance). A missing or IN_PROGRESS status never counts as done.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Generic, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from elevation.access.policy import GrantSettings
from elevation.identity_center import AssignmentStatus

Item = TypeVar("Item")


@dataclass
class Outcome(Generic[Item]):
    item: Item
    status: AssignmentStatus | None  # the last status seen (None: never started)
    confirmed: bool
    reason: str | None = None  # why not confirmed
    retry_later: bool = False  # not settled either way (AWS unavailable): leave it for the next run


@dataclass(frozen=True)
class PollSettings:
    max_in_flight: int = 10
    initial_interval: timedelta = timedelta(seconds=1)
    max_interval: timedelta = timedelta(seconds=10)
    bound: timedelta = timedelta(minutes=3)

    @classmethod
    def of(cls, grants: GrantSettings) -> PollSettings:
        """The policy's `grants` settings, which bound every wait on an assignment's creation or deletion."""
        return cls(grants.max_creations_in_flight, grants.status_poll_initial, grants.status_poll_max,
                   grants.status_wait_bound)


def confirm_all(
    items: Iterable[Item],
    *,
    start: Callable[[Item], AssignmentStatus | Outcome[Item]],
    describe: Callable[[str], AssignmentStatus],
    settings: PollSettings,
    on_outcome: Callable[[Outcome[Item]], None],
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    heartbeat: Callable[[], None] | None = None,
) -> None:
    """Start each item (bounded in flight), poll, and hand every item's outcome to `on_outcome` as it settles.

    `start` returns the request's first status, or an Outcome directly when nothing needs waiting for (already
    present, already gone, refused). `heartbeat` is called once per polling round: the caller renews its claims
    there, so a live worker keeps them and a dead one's lapse.
    """
    waiting = deque(items)
    in_flight: dict[int, tuple[Item, AssignmentStatus, float]] = {}
    interval = settings.initial_interval.total_seconds()
    while waiting or in_flight:
        while waiting and len(in_flight) < settings.max_in_flight:
            item = waiting.popleft()
            started = start(item)
            if isinstance(started, Outcome):
                on_outcome(started)
            elif started.failed:
                on_outcome(Outcome(item, started, False, started.failure_reason or "FAILED without a reason"))
            elif not started.request_id:
                on_outcome(Outcome(item, started, False, "AWS returned no request id to confirm"))
            else:
                in_flight[id(item)] = (item, started, monotonic())
        if not in_flight:
            continue
        if heartbeat is not None:
            heartbeat()
        sleep(interval)
        interval = min(interval * 2, settings.max_interval.total_seconds())
        for key, (item, last, started_at) in list(in_flight.items()):
            try:
                status = describe(str(last.request_id))
            except (ClientError, BotoCoreError) as error:  # retries exhausted: keep waiting until the bound
                status = AssignmentStatus(last.request_id, None, f"status call failed: {error}")
            if status.succeeded:
                outcome = Outcome(item, status, True)
            elif status.failed:
                outcome = Outcome(item, status, False, status.failure_reason or "FAILED without a reason")
            elif monotonic() - started_at >= settings.bound.total_seconds():
                seen = status.status or "no status in the answer"
                outcome = Outcome(
                    item, status, False, f"not confirmed within {settings.bound} (last status: {seen})"
                )
            else:
                in_flight[key] = (item, status, started_at)
                continue
            del in_flight[key]
            on_outcome(outcome)
            interval = settings.initial_interval.total_seconds()
