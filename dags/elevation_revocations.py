"""Every minute: end sessions whose time is up or whose early end was requested, confirmed, overlap-safe."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from elevation.alerts import task_failed

DOC = """
### Revocations
Every minute, moves `active` requests whose end time has passed (by the run's logical time or the real
clock, whichever is later) to `ending`, and for every `ending` request deletes the IAM Identity Center
assignment, waiting until AWS confirms it. An assignment that another active session or a standing
assignment still needs is kept (the request still ends).

A revoke that fails stays `ending` with an attempt count and is retried each run. When any session is
overdue by more than `policy.revocation.overdue_margin` (default 10 minutes) **this run fails** after doing
all it can (and once more on its retry, 20 s later), so failure alerts fire. Each run writes a heartbeat row (`elevation_heartbeat`, job
`elevation_revocations`) that an outside monitor can watch.
"""


@dag(
    dag_id="elevation_revocations",
    schedule="* * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["elevation", "identity-center"],
    # One retry, before the next minute's run could start: a passing error (the database, AWS) pages nobody; a run
    # that fails because a session is overdue fails again 20 s later, after one more try at the revokes.
    default_args={"owner": "platform", "retries": 1, "retry_delay": pendulum.duration(seconds=20),
                  "execution_timeout": pendulum.duration(minutes=30),
                  "on_failure_callback": task_failed},
    doc_md=DOC,
)
def elevation_revocations() -> None:
    @task
    def revoke(**context: object) -> dict:
        from elevation import jobs

        return jobs.revocations(context)

    revoke()


elevation_revocations()
