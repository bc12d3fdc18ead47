"""Wait for the night's CloudTrail Lake queries in Airflow's triggerer, not in a worker slot.

A Lake scan can take minutes; this operator defers on `CloudTrailLakeQueryTrigger` for each query in turn and
returns `{statement: [query_id, bytes_scanned]}` for the extract task, which then only fetches results. Every
terminal status other than FINISHED fails the task with Lake's own message. Its input (the query ids and the
connection and timing settings) comes from the task that started the queries, as one templated dict. Kept light
(Airflow's SDK only at import) because the `elevation_extract` DAG file imports it.
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
        return self._next({})

    def _next(self, done: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for statement, query_id in self.queries.get("ids", {}).items():
            if statement not in done:
                self._defer_on(statement, query_id, done)
        return done

    def _defer_on(self, statement: str, query_id: str, done: dict[str, list[Any]]) -> None:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        from elevation.cloudtrail.lake_trigger import CloudTrailLakeQueryTrigger

        conn_id = self.queries["conn_id"]
        settings = AwsBaseHook(aws_conn_id=conn_id).conn_config
        trigger = CloudTrailLakeQueryTrigger(
            query_id,
            self.queries["event_data_store"],
            aws_conn_id=conn_id,
            region_name=settings.region_name,
            endpoint_url=settings.endpoint_url,
            poll_interval=float(self.queries["poll_interval"]),
            max_wait=float(self.queries["max_wait"]),
        )
        self.defer(trigger=trigger, method_name="resume", kwargs={"statement": statement, "done": done})

    def resume(self, context: Any, event: dict[str, Any], statement: str, done: dict[str, list[Any]]) -> Any:
        if event["status"] != "FINISHED":
            raise RuntimeError(
                f"CloudTrail Lake query {event['query_id']} ended {event['status']}: "
                f"{event.get('error') or 'no message'}"
            )
        self.log.info("Lake query %s finished, %s bytes scanned", event["query_id"], event["bytes_scanned"])
        return self._next({**done, statement: [event["query_id"], int(event["bytes_scanned"] or 0)]})
