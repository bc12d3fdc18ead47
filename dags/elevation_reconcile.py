"""Hourly: what exists in IAM Identity Center against what the system recorded; drift recorded, reported, fixed."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from elevation.alerts import task_failed

DOC = """
### Reconcile
Every hour, as of its logical time: lists the assignments of the configured scope (`reconcile.accounts` and
`reconcile.ous`, `reconcile.permission_sets`) with as few calls as the APIs allow, and compares them with the
system's record (standing assignments, active sessions, sessions in motion):

- **unexpected**: exists, expected by nothing (a console click, a script, an assignment that existed before a
  session and was kept at its end);
- **lingering**: belonged to a session that has ended or been revoked (a lost or failed revoke);
- **missing**: an active session's or a standing assignment's assignment does not exist.

Each item is one row of `elevation_drift` while it lasts. In `report` mode (the default) nothing is touched. In
`enforce` mode unexpected and lingering assignments are removed, each confirmed; a run that would remove more than
`reconcile.max_removals` removes nothing and **fails**, listing what it would have removed. Protected principals,
standing assignments and anything outside the scope are never touched. The report (HTML and JSON) goes under the
reconcile reports location; `elevation drift` prints the open items.
"""


@dag(
    dag_id="elevation_reconcile",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["elevation", "identity-center", "audit"],
    default_args={"owner": "security", "retries": 1, "retry_delay": pendulum.duration(minutes=2),
                  "execution_timeout": pendulum.duration(hours=1),
                  "on_failure_callback": task_failed},
    doc_md=DOC,
)
def elevation_reconcile() -> None:
    @task
    def reconcile(**context: object) -> dict:
        from elevation import jobs

        return jobs.reconcile(context)

    reconcile()


elevation_reconcile()
