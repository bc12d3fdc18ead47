"""Every minute: grant the approved requests whose start has come, confirmed with AWS."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from elevation.alerts import task_failed
from elevation.pools import IDENTITY_CENTER_POOL

DOC = """
### Grants
Every minute: takes approved requests whose start has come (validated by `elevation_intake`), checks them against
policy again, creates the IAM Identity Center account assignment and waits for AWS to confirm it (SUCCEEDED)
before marking the request `active`. At most 10 creations are in flight; the task runs in the
`elevation_identity_center` pool (created by `elevation db upgrade`; without it this task never starts, and
`elevation_intake` fails to say so).

A grant whose creation was sent is followed to its outcome even if its worker dies: a retry resumes it at once,
another run once its claim lapses. A grant deferred because AWS is failing is a warning on the row; after
`policy.grants.overdue_after` **this run fails**. An assignment that already existed outside the system is
recorded as pre-existing and never removed at the session's end.

Each run acts as of its logical date, so `airflow dags test elevation_grants <date>` replays any moment.
"""


@dag(
    dag_id="elevation_grants",
    schedule="* * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["elevation", "identity-center"],
    default_args={"owner": "platform", "retries": 2, "retry_delay": pendulum.duration(seconds=20),
                  "execution_timeout": pendulum.duration(minutes=30),
                  "on_failure_callback": task_failed},
    doc_md=DOC,
)
def elevation_grants() -> None:
    @task(pool=IDENTITY_CENTER_POOL)
    def grant(**context: object) -> dict:
        from elevation import jobs

        return jobs.grants(context)

    grant()


elevation_grants()
