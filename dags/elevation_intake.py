"""Every minute: apply decisions, validate new requests, auto-approve, expire; never waits behind granting."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from elevation.alerts import task_failed

DOC = """
### Intake
Every minute, on its own (so decisions, validation and early revocations never wait behind a grant):

- applies approve / reject / cancel / revoke actions from `elevation_action` (the decision form, the command line,
  an outside system), each exactly once;
- validates rows outside systems inserted into `elevation_request` against the policy, one at a time: a bad or
  unreadable row ends `rejected` with the reason on the row, and the others proceed;
- auto-approves what policy allows, and expires requests nobody decided in time.

**This run fails** when approved requests have been due for longer than `policy.grants.overdue_after` (15 minutes by
default) without being granted: AWS failing, `elevation_grants` paused, or its pool `elevation_identity_center`
missing (create it with `elevation db upgrade`, or `airflow pools set elevation_identity_center 1 "..."`).
"""


@dag(
    dag_id="elevation_intake",
    schedule="* * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["elevation", "identity-center"],
    default_args={"owner": "platform", "retries": 2, "retry_delay": pendulum.duration(seconds=20),
                  "execution_timeout": pendulum.duration(minutes=10),
                  "on_failure_callback": task_failed},
    doc_md=DOC,
)
def elevation_intake() -> None:
    @task
    def intake(**context: object) -> dict:
        from elevation import jobs

        return jobs.intake(context)

    intake()


elevation_intake()
