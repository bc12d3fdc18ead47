"""AWS clients through Airflow's `aws_default`-style connections, and the one retry policy for AWS calls.

Identity Center shares about 20 requests/s per account; throttling and ConflictException ("try later") are normal
at scale. Every call goes through :func:`call_with_retry`, which backs off with jitter and records each attempt's
outcome through the caller's `on_attempt` hook (the event log), so an audit can see every call and its result.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from botocore.config import Config
from botocore.exceptions import ClientError, ConnectionError, ReadTimeoutError

RETRYABLE_CODES = frozenset(
    {
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "ConflictException",
        "InternalServerException",
        "InternalFailure",
        "ServiceUnavailable",
        "ServiceUnavailableException",
    }
)

# botocore's own retries off: one policy (ours) decides, and every attempt is visible to it.
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "total_max_attempts": 1}, connect_timeout=10, read_timeout=30
)


def error_code(error: BaseException) -> str:
    if isinstance(error, ClientError):
        return str(error.response.get("Error", {}).get("Code", "ClientError"))
    return type(error).__name__


def is_retryable(error: BaseException) -> bool:
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error_code(error) in RETRYABLE_CODES or status >= 500
    return isinstance(error, ConnectionError | ReadTimeoutError)


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 8
    base_delay: float = 0.5
    max_delay: float = 20.0

    def delay(self, attempt: int) -> float:
        """Full jitter exponential backoff (attempt counts from 1)."""
        return random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


AttemptHook = Callable[[str, int, BaseException | None], None]


def call_with_retry(
    operation: str,
    call: Callable[[], Any],
    *,
    policy: RetryPolicy = RetryPolicy(),
    sleep: Callable[[float], None] = time.sleep,
    on_attempt: AttemptHook | None = None,
) -> Any:
    """Run `call`, retrying throttling, conflicts, server errors and timeouts; re-raise anything else at once."""
    for attempt in range(1, policy.attempts + 1):
        try:
            result = call()
        except (ClientError, ConnectionError, ReadTimeoutError) as error:
            if on_attempt:
                on_attempt(operation, attempt, error)
            if not is_retryable(error) or attempt == policy.attempts:
                raise
            sleep(policy.delay(attempt))
        else:
            if on_attempt:
                on_attempt(operation, attempt, None)
            return result
    raise AssertionError("unreachable")


class Pacer:
    """Spaces calls at least 1/rate seconds apart (client-side pacing: throttling is retried, but a large
    organization's reconcile should not lean on it)."""

    def __init__(
        self,
        calls_per_second: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.interval = 1.0 / calls_per_second
        self._clock, self._sleep = clock, sleep
        self._next = 0.0

    def wait(self) -> None:
        now = self._clock()
        if now < self._next:
            self._sleep(self._next - now)
            now = self._next
        self._next = now + self.interval


@dataclass
class AwsClients:
    sso_admin: Any
    identitystore: Any
    organizations: Any


def airflow_session(conn_id: str) -> tuple[Any, str | None, str | None]:
    """(boto3 session, endpoint_url, region) of an Airflow AWS connection, for the clients the hook does not make
    (S3 for the trail, the output and the reports; CloudTrail Lake)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    hook = AwsBaseHook(aws_conn_id=conn_id)
    return hook.get_session(), hook.conn_config.endpoint_url, hook.conn_config.region_name


def clients_from_airflow(conn_id: str, region: str | None = None) -> AwsClients:
    """Clients built by the amazon provider's hook from an Airflow connection (endpoint_url extra honoured)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    def client(service: str) -> Any:
        return AwsBaseHook(aws_conn_id=conn_id, client_type=service, region_name=region).get_client_type(
            config=CLIENT_CONFIG
        )

    return AwsClients(
        sso_admin=client("sso-admin"),
        identitystore=client("identitystore"),
        organizations=client("organizations"),
    )
