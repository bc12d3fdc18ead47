"""After each nightly extract: an HTML audit report per session, the night's index, and a findings file."""

from __future__ import annotations

import pendulum
from airflow.sdk import Asset, Param, dag, task

from elevation.alerts import task_failed

DOC = """
### Session audit
Runs when `elevation_extract` updates the `elevation_cloudtrail_events` Asset. For every session of that night:
evaluates the Sigma rules (the shipped pack plus `audit.rule_folders`) over all of the session's events in one
pass, and writes a self-contained HTML report (who, account, permission set, approver, justification, ticket,
window; counts; findings by severity with the request parameters; all writes; a timeline; CSV and Parquet
downloads) under `audit.reports_location/sessions/`. A session whose audit window is still open gets a report
marked **provisional**, replaced when its window closes; its final result is recorded once in `elevation_audit`.
The night's `index.html` (worst first) and `findings-<night>.jsonl` (for a SIEM: each finding once, when its
session is final, with a stable `key`) go under `audit.reports_location/<night>/`. Earlier nights that gained late
events are re-audited first. The run **fails** after writing everything when an audited account had no CloudTrail
data for a day of a session's window (the reports say which), or the night was never extracted: run it alone only
with the `night` parameter, after that night's extract.
"""


@dag(
    dag_id="elevation_audit",
    schedule=[Asset("elevation_cloudtrail_events")],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["elevation", "audit"],
    default_args={"owner": "security", "retries": 1,
                  "execution_timeout": pendulum.duration(hours=4),
                  "on_failure_callback": task_failed},
    doc_md=DOC,
    params={"night": Param(None, type=["null", "string"], format="date", title="Night (YYYY-MM-DD; empty: the extracted one)")},
)
def elevation_audit() -> None:
    @task
    def audit(params: dict, **context: object) -> dict:
        from elevation import jobs

        return jobs.audit(params, context)

    audit()


elevation_audit()
