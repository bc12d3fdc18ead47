"""Wait for a CloudTrail Lake query in the triggerer, so no worker slot is held for the minutes a scan takes.

The DAG's task starts the query (:meth:`LakeClient.start_query`), defers on this trigger, and resumes with the
trigger's event to fetch the results. The poll is the same DescribeQuery as the synchronous path, run in a thread
(aiobotocore is not a dependency), with asyncio.sleep between polls and a bound on the total wait.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from elevation.cloudtrail.lake import LakeClient, QueryState


class CloudTrailLakeQueryTrigger(BaseTrigger):
    """Fires once with `{"status", "query_id", "bytes_scanned", "error"}`: status is a Lake terminal status
    (FINISHED, FAILED, CANCELLED, TIMED_OUT), WAIT_TIMEOUT after `max_wait` seconds (the query is then
    cancelled), or ERROR when DescribeQuery itself failed."""

    def __init__(
        self,
        query_id: str,
        event_data_store: str,
        *,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        endpoint_url: str | None = None,
        poll_interval: float = 10.0,
        max_wait: float = 3600.0,
    ) -> None:
        super().__init__()
        self.query_id = query_id
        self.event_data_store = event_data_store
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.endpoint_url = endpoint_url
        self.poll_interval = poll_interval
        self.max_wait = max_wait

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "query_id": self.query_id,
                "event_data_store": self.event_data_store,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "endpoint_url": self.endpoint_url,
                "poll_interval": self.poll_interval,
                "max_wait": self.max_wait,
            },
        )

    def _session(self) -> Any:
        """The boto3 session of the Airflow connection (or the default chain when no connection is named)."""
        if self.aws_conn_id:
            from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

            hook = AwsBaseHook(
                aws_conn_id=self.aws_conn_id, client_type="cloudtrail", region_name=self.region_name
            )
            return hook.get_session(region_name=self.region_name)
        import boto3

        return boto3.session.Session(region_name=self.region_name)

    def _client(self) -> LakeClient:
        return LakeClient(
            self._session(),
            self.event_data_store,
            region_name=self.region_name,
            endpoint_url=self.endpoint_url,
            poll_interval=self.poll_interval,
            max_wait=self.max_wait,
        )

    def _event(self, state: QueryState, status: str | None = None) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": status or state.status,
                "query_id": self.query_id,
                "bytes_scanned": state.bytes_scanned,
                "error": state.error,
            }
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        client = await asyncio.to_thread(self._client)
        deadline = time.monotonic() + self.max_wait
        while True:
            try:
                state = await asyncio.to_thread(client.query_status, self.query_id)
            except Exception as error:
                yield TriggerEvent(
                    {"status": "ERROR", "query_id": self.query_id, "bytes_scanned": 0, "error": str(error)}
                )
                return
            if state.terminal:
                yield self._event(state)
                return
            if time.monotonic() >= deadline:
                await asyncio.to_thread(client.cancel, self.query_id)
                yield self._event(state, "WAIT_TIMEOUT")
                return
            await asyncio.sleep(self.poll_interval)
