"""Nightly: the CloudTrail events of every elevated session, into Parquet (CloudTrail Lake or S3 trail logs)."""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Param, dag, task

from elevation.alerts import task_failed
from elevation.lake_wait import WaitForLakeQueriesOperator

EXTRACTED = Asset("elevation_cloudtrail_events")

DOC = """
### Nightly CloudTrail extract
For the night (a calendar day of `extract.timezone`, default UTC: by default the day before the run's logical
date; or the `night` parameter), finds the sessions whose audit window overlaps it (grant to end plus the
permission set's session duration, since credentials outlive the assignment) and extracts their CloudTrail
events into Parquet under `extract.output_location`, partition `date=YYYY-MM-DD/`, atomically.

- **plan** picks the night; with `extract.source: lake` it starts ONE CloudTrail Lake query for all sessions,
  bounded by `eventTime` (values validated and escaped).
- **wait_for_lake** waits for the queries in the triggerer (deferrable, no worker slot held); nothing to do for S3.
- **extract** reads the source (S3: only `AWSLogs/[org]/ACCOUNT/CloudTrail/REGION/YYYY/MM/DD/` of the sessions'
  accounts, plus the delivery margin), matches events to sessions by identity and time, follows assumed roles one
  hop, writes the partition and its `_manifest.json`, logs events per session and Lake's BytesScanned, and updates
  the `elevation_cloudtrail_events` Asset that schedules `elevation_audit`.
- **Nothing missing in silence**: a day of a session's account with no trail object at all (wrong `s3_prefix` or
  `s3_org_id`, a stopped trail) is logged as an error and recorded in the manifest; the audit shows it and fails.
- **Late deliveries**: events of the nights within `extract.late_delivery_lookback` (2 days) found in tonight's
  files are added to those nights (exactly once); the Asset names them, so the audit re-audits them too.
"""


@dag(
    dag_id="elevation_extract",
    schedule="30 0 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["elevation", "audit", "cloudtrail"],
    default_args={"owner": "security", "retries": 2, "retry_delay": pendulum.duration(minutes=5),
                  "execution_timeout": pendulum.duration(hours=4),
                  "on_failure_callback": task_failed},
    doc_md=DOC,
    params={"night": Param(None, type=["null", "string"], format="date", title="Night (YYYY-MM-DD; empty: yesterday)")},
)
def elevation_extract() -> None:
    @task
    def plan(params: dict, **context: object) -> dict:
        from elevation import jobs

        return jobs.extract_plan(params, context)

    @task(outlets=[EXTRACTED])
    def extract(plan: dict, finished: dict, **context: object) -> dict:
        from elevation import jobs

        return jobs.extract(plan, finished, context, EXTRACTED)

    planned = plan()
    waited = WaitForLakeQueriesOperator(task_id="wait_for_lake", queries=planned)
    extract(planned, waited.output)


elevation_extract()
