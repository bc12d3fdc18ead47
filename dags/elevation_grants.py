"""Every minute: apply decisions, validate new requests, and grant the approved ones whose start has come."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

DOC = """
### Grants
Every minute, in two steps:

1. **intake** applies approve / reject / cancel / revoke actions (from `elevation_action`, the decision form or
   the command line), validates rows that outside systems inserted into `elevation_request` against the policy,
   auto-approves what policy allows, and expires requests nobody decided in time. Bad rows end `rejected` with a
   reason on the row.
2. **grant** takes approved requests whose start has come, checks them against policy again, creates the
   IAM Identity Center account assignment and waits for AWS to confirm it (SUCCEEDED) before marking the
   request `active`. At most 10 creations are in flight; the task runs in the `elevation_identity_center` pool.

Each run acts as of its logical date, so `airflow dags test elevation_grants <date>` replays any moment.
"""


@dag(
    dag_id="elevation_grants",
    schedule="* * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["elevation", "identity-center"],
    default_args={"owner": "platform", "retries": 2, "retry_delay": pendulum.duration(seconds=20)},
    doc_md=DOC,
)
def elevation_grants() -> None:
    @task
    def intake(**context: object) -> dict:
        from elevation import jobs

        return jobs.intake(context)

    @task(pool="elevation_identity_center")
    def grant(**context: object) -> dict:
        from elevation import jobs

        return jobs.grants(context)

    intake() >> grant()


elevation_grants()
