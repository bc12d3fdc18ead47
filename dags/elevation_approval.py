"""Approving in the Airflow UI: one human-in-the-loop run per pending request, and the dispatcher that starts them."""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, task

from elevation.access.approval import APPROVAL_DAG_ID, ASK_TASK_ID, AskApprovers
from elevation.alerts import task_failed

DOC = """
### Approve a request (human in the loop)
One run per pending request (run id `approval__<request id>`), started by `elevation_approval_dispatch`; if that run
failed and the request is still pending, the dispatcher starts another (`approval__<request id>__2`, ...).
**ask** waits in *Required Actions* for the approvers the policy names for the account (never the requester unless
the policy allows self-approval), with the request's details, until the request would expire; a timeout never
approves. **apply** records the answer as an `elevation_action` row (actor: the Airflow user who answered) and
applies it with intake, through the same checks as every other decision; it is retried when that fails (a database
error), and a repeated answer changes nothing. If the request was decided elsewhere meanwhile (command line, Slack,
another system, expiry), the answer changes nothing and the run says so.
"""

DISPATCH_DOC = """
### Start and close approvals
Every minute: starts an `elevation_approval` run for each pending, validated request that has none yet, or whose
last one failed (run ids `approval__<request id>`, then `approval__<request id>__2`, ...: derived from what it saw,
so a repeated or concurrent start is a no-op; at most 5 per request), and closes waiting approvals whose request
was decided elsewhere, by answering them through Airflow's REST API as the user of the connection
`elevation_airflow_api` (without that connection they wait until their timeout, the request's expiry, and then end).
"""


@dag(
    dag_id=APPROVAL_DAG_ID,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["elevation", "approval"],
    default_args={"owner": "platform", "retries": 0,
                  "on_failure_callback": task_failed},
    doc_md=DOC,
    params={"request_id": Param(0, type="integer", minimum=1, title="Request id")},
)
def elevation_approval() -> None:
    # Retried when reading the request or the account's OUs fails (AWS unavailable); a wait that times out or an
    # answer is no failure.
    answer = AskApprovers(task_id=ASK_TASK_ID, execution_timeout=None, retries=2,
                          retry_delay=pendulum.duration(minutes=1))

    # Retried when recording or applying the answer fails (a database error): the answer is kept in XCom, and a
    # repeated one is refused quietly as not pending. A refused decision is final (no retry) and says why.
    @task(execution_timeout=pendulum.duration(minutes=10), retries=3, retry_delay=pendulum.duration(seconds=30))
    def apply(answer: dict | None, **context: object) -> dict:
        from elevation.access.approval import apply_task

        return apply_task(answer, context)

    apply(answer.output)


@dag(
    dag_id="elevation_approval_dispatch",
    schedule="* * * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["elevation", "approval"],
    default_args={"owner": "platform", "retries": 1, "retry_delay": pendulum.duration(seconds=20),
                  "execution_timeout": pendulum.duration(minutes=5),
                  "on_failure_callback": task_failed},
    doc_md=DISPATCH_DOC,
)
def elevation_approval_dispatch() -> None:
    @task
    def requests_to_ask(**context: object) -> list[dict]:
        from elevation.access.approval import requests_to_ask

        return requests_to_ask(context)

    @task
    def close_stale(**context: object) -> dict:
        from elevation.access.approval import close_stale_task

        return close_stale_task(context)

    TriggerDagRunOperator.partial(
        task_id="start_approval", trigger_dag_id=APPROVAL_DAG_ID, skip_when_already_exists=True,
    ).expand_kwargs(requests_to_ask())
    close_stale()


elevation_approval()
elevation_approval_dispatch()
