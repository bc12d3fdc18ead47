"""A form to request temporary elevated access: the same row any outside system could insert."""

from __future__ import annotations

import pendulum
from airflow.sdk import Param, dag, task

from elevation.alerts import task_failed

DOC = """
### Request temporary access
Fill in the form (**Trigger DAG**). You request as yourself: the requester is your Airflow login (or email),
mapped to a person by `policy.people`. The request is inserted into `elevation_request` exactly as an outside
system would insert it, then checked against the policy at once; the task log and its return value say
whether it is `pending` (waiting for an approver), `approved` (no approval needed) or `rejected` (with why).
Approvers decide with the `elevation_decide` form, the `elevation` command line, or a row in `elevation_action`.
"""


@dag(
    dag_id="elevation_request",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["elevation", "form"],
    # A form is not retried: a retry would file the request a second time; the person who submitted it sees the
    # failure in the run at once and submits again.
    default_args={"owner": "platform", "retries": 0,
                  "execution_timeout": pendulum.duration(minutes=10),
                  "on_failure_callback": task_failed},
    doc_md=DOC,
    params={
        "requester": Param(
            None, type=["null", "string"], maxLength=256,
            title="Requester (only without a logged-in user: you always request as yourself)",
        ),
        "account_id": Param("", type="string", pattern=r"^\d{12}$", title="AWS account id"),
        "permission_set": Param("", type="string", minLength=1, maxLength=256, title="Permission set name"),
        "principal_group": Param(None, type=["null", "string"], title="Group (instead of yourself)"),
        "start_at": Param(None, type=["null", "string"], format="date-time", title="Start (UTC; empty = now)"),
        "duration_minutes": Param(60, type="integer", minimum=1, maximum=24 * 60, title="Duration (minutes)"),
        "justification": Param("", type="string", maxLength=4000, title="Justification"),
        "ticket": Param(None, type=["null", "string"], maxLength=200, title="Ticket or incident"),
    },
)
def elevation_request() -> None:
    @task
    def submit(params: dict, **context: object) -> dict:
        from elevation import jobs

        return jobs.submit_request(params, context)

    submit()


elevation_request()
