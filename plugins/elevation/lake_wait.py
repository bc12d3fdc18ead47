"""Wait for the night's CloudTrail Lake queries in Airflow's triggerer, not in a worker slot.

A Lake scan can take minutes. This operator looks at each query once (a cheap DescribeQuery); while one is still
running it defers on `CloudTrailLakeQueryTrigger` and looks again when the trigger fires, so no worker slot is
held while Lake scans. It returns `{statement: [query_id, bytes_scanned]}` for the extract task, which then only
fetches results. Any terminal status other than FINISHED fails the task with Lake's own message. Its input (the
query ids, connection and timing settings) comes from the task that started the queries, as one templated dict.
Kept light (Airflow's SDK only at import) because the `elevation_extract` DAG file imports it.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import BaseOperator


class WaitForLakeQueriesOperator(BaseOperator):
    template_fields = ("queries",)

    def __init__(self, *, queries: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        # {"ids": {statement: query_id}, "event_data_store", "conn_id", "poll_interval", "max_wait"}
        self.queries = queries

    def execute(self, context: Any) -> dict[str, list[Any]]:
        return self._check_all()

    def resume(self, context: Any, event: dict[str, Any] | None = None, **_: Any) -> dict[str, list[Any]]:
        if event is not None:
            self._fail_unless_finished(event["query_id"], event["status"], event.get("error"))
        return self._check_all()

    def _fail_unless_finished(self, query_id: str, status: str, error: str | None) -> None:
        if status != "FINISHED":
            raise RuntimeError(f"CloudTrail Lake query {query_id} ended {status}: {error or 'no message'}")

    def _check_all(self) -> dict[str, list[Any]]:
        ids: dict[str, str] = self.queries.get("ids") or {}
        if not ids:
            return {}
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        from elevation.cloudtrail.lake import LakeClient

        hook = AwsBaseHook(aws_conn_id=self.queries["conn_id"])
        client = LakeClient(hook.get_session(), self.queries["event_data_store"],
                            region_name=hook.conn_config.region_name, endpoint_url=hook.conn_config.endpoint_url)
        finished: dict[str, list[Any]] = {}
        for statement, query_id in ids.items():
            state = client.query_status(query_id)
            if not state.terminal:
                self._defer_on(query_id, hook)
            self._fail_unless_finished(query_id, state.status, state.error)
            self.log.info("Lake query %s finished, %s bytes scanned", query_id, state.bytes_scanned)
            finished[statement] = [query_id, int(state.bytes_scanned or 0)]
        return finished

    def _defer_on(self, query_id: str, hook: Any) -> None:
        from elevation.cloudtrail.lake_trigger import CloudTrailLakeQueryTrigger

        trigger = CloudTrailLakeQueryTrigger(
            query_id,
            self.queries["event_data_store"],
            aws_conn_id=self.queries["conn_id"],
            region_name=hook.conn_config.region_name,
            endpoint_url=hook.conn_config.endpoint_url,
            poll_interval=float(self.queries["poll_interval"]),
            max_wait=float(self.queries["max_wait"]),
        )
        self.defer(trigger=trigger, method_name="resume")
