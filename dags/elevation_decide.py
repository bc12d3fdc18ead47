"""A form for approvers and requesters: approve, reject, cancel, or end a session early."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from elevation.alerts import task_failed

DOC = """
### Decide on a request
Approve or reject a pending request, cancel your own request, or end an active session early (requester or
approver). The decision is recorded as an action row and applied through the same checks as every other
path: an approver must be one the policy names for the account, and cannot approve their own request unless
the policy allows it. The actor is the logged-in Airflow user; the `actor` parameter is only used when the
run has no user (e.g. `airflow dags test`).
"""


@dag(
    dag_id="elevation_decide",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["elevation", "form"],
    # A form is not retried: a retry records the action again, so it would repeat a refusal, or report a decision
    # its first try applied as refused (not pending); the person who submitted it sees the failure at once.
    default_args={"owner": "platform", "retries": 0,
                  "execution_timeout": pendulum.duration(minutes=10),
                  "on_failure_callback": task_failed},
    doc_md=DOC,
    params={
        "request_id": Param(0, type="integer", minimum=1, title="Request id"),
        "action": Param("approve", type="string", enum=["approve", "reject", "cancel", "revoke"], title="Action"),
        "comment": Param(None, type=["null", "string"], maxLength=2000, title="Comment"),
        "actor": Param(None, type=["null", "string"], title="Actor (only without a logged-in user)"),
    },
)
def elevation_decide() -> None:
    @task
    def decide(params: dict, **context: object) -> dict:
        from elevation import jobs

        return jobs.decide(params, context)

    decide()


elevation_decide()
