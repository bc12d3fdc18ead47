"""Every minute: Slack notifications from the outbox (produce, then send); never in the grant or revoke path."""

from __future__ import annotations

import pendulum
from airflow.sdk import dag, task

from elevation.alerts import task_failed

DOC = """
### Notifications (Slack)
Every minute, on its own (Slack being slow or down never holds up a grant or a revoke):

1. **produce**: turns what happened into rows of `elevation_outbox`, each once (a `dedup_key` per event and
   recipient): pending requests to their approvers (Approve / Reject buttons), decisions, activation, *ending
   soon*, the end, grant / revoke failures and overdue revokes (also to `notifications.admin_channel`), each
   session's final audit result (to the requester and the approver, or `notifications.security_channel` for
   auto-approved sessions) and the nightly digest;
2. **send**: delivers due rows through the Slack connection `notifications.slack_conn_id` (DMs by email lookup).
   A rate limit waits for `Retry-After`; 5xx and network errors back off; someone not in Slack is `skipped`.

Off until `notifications.enabled: true`. **Stuck messages** show on the heartbeat row `elevation_notify`
(outcome `stuck`, with their ids) and in `elevation_outbox` (`state`, `attempts`, `last_error`).
"""


@dag(
    dag_id="elevation_notify",
    schedule="* * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["elevation", "slack"],
    default_args={"owner": "platform", "retries": 2, "retry_delay": pendulum.duration(seconds=20),
                  "execution_timeout": pendulum.duration(minutes=10),
                  "on_failure_callback": task_failed},
    doc_md=DOC,
)
def elevation_notify() -> None:
    @task
    def notify(**context: object) -> dict:
        from elevation import jobs

        return jobs.notify(context)

    notify()


elevation_notify()
