"""Every DAG alerts the admins' Slack channel when a task fails, through the Slack provider's notifier."""

from __future__ import annotations

from datetime import timedelta
from types import SimpleNamespace

import pytest
from airflow.providers.standard.operators.hitl import HITLOperator

from conftest import REPO
from elevation.alerts import failure_text, task_failed
from elevation.devkit.slack_fake import SlackFake


def context(error: Exception) -> dict:
    ti = SimpleNamespace(dag_id="elevation_grants", task_id="grant", run_id="scheduled__2026-11-29T01:00:00+00:00",
                         try_number=3, log_url="http://airflow.example.com/dags/elevation_grants/runs/x/tasks/grant")
    return {"ti": ti, "exception": error}


def test_the_alert_says_what_failed_why_and_links_the_log_with_the_error_escaped() -> None:
    text = failure_text(context(RuntimeError("boom <!channel> & <@U123>")))
    assert "*elevation_grants* task *grant* failed" in text and "try 3" in text
    assert "RuntimeError: boom &lt;!channel&gt; &amp; &lt;@U123&gt;" in text and "<!channel>" not in text
    assert "<http://airflow.example.com/dags/elevation_grants/runs/x/tasks/grant|Open the task's log>" in text


@pytest.fixture
def slack(monkeypatch: pytest.MonkeyPatch, configure):  # noqa: ANN001, ANN201
    with SlackFake() as fake:
        fake.add_channel("elevation-admins")
        monkeypatch.setenv("AIRFLOW_CONN_SLACK_API_DEFAULT", fake.airflow_connection_json())
        yield fake


def test_a_failed_task_posts_to_the_admin_channel_once(slack, configure) -> None:  # noqa: ANN001
    configure({"notifications": {"enabled": True, "admin_channel": "#elevation-admins"}})
    task_failed(context(ValueError("approved requests overdue")))
    posted = slack.messages_to("#elevation-admins")
    assert len(posted) == 1 and "approved requests overdue" in posted[0].text


def test_without_an_admin_channel_nothing_is_sent_and_nothing_raises(slack, configure) -> None:  # noqa: ANN001
    configure({"notifications": {"enabled": True}})
    task_failed(context(ValueError("x")))
    assert slack.messages == []


def test_slack_being_down_never_raises_from_the_callback(slack, configure) -> None:  # noqa: ANN001
    configure({"notifications": {"enabled": True, "admin_channel": "#elevation-admins"}})
    slack.fail_next(5, status=500)
    task_failed(context(ValueError("x")))  # logged, not raised
    assert [method for method, _ in slack.calls if method == "chat.postMessage"]  # it did try
    assert slack.messages == []


def test_a_secret_in_the_exception_is_masked_as_in_the_task_log() -> None:
    """Airflow masks connection passwords and variables in task logs; the alert to Slack must not leak them."""
    from airflow.sdk.log import mask_secret

    mask_secret("pg-Pa55word-0f-the-queue")
    text = failure_text(context(RuntimeError("could not connect to postgresql://elevation:pg-Pa55word-0f-the-queue@db")))
    assert "pg-Pa55word-0f-the-queue" not in text and "***" in text


def test_every_dag_alerts_on_failure_and_has_a_timeout(dagbag) -> None:  # noqa: ANN001
    for dag_id in dagbag.dag_ids:
        dag = dagbag.get_dag(dag_id)
        if not dag_id.startswith("elevation_"):
            continue
        for task in dag.tasks:
            # A human-in-the-loop task waits for a person, bounded by its response timeout (the request's expiry,
            # set when it starts), not by an execution timeout (the HITL operator clears that one).
            if not isinstance(task, HITLOperator):
                assert task.execution_timeout is not None, (dag_id, task.task_id)
            callbacks = task.on_failure_callback if isinstance(task.on_failure_callback, list) else [
                task.on_failure_callback]
            assert task_failed in callbacks, (dag_id, task.task_id)


#: The forms: a retry would file the request again, or record the decision again (see the README's DAG section).
NOT_RETRIED = {"elevation_request", "elevation_decide"}


@pytest.fixture(scope="module")
def parsed_dags(airflow_db: None) -> dict:
    """The DAGs as their files set them: the session's `dagbag` has its retries zeroed by `run_dag` for speed."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(REPO / "dags"))
    assert not bag.import_errors, bag.import_errors
    return {dag_id: bag.get_dag(dag_id) for dag_id in bag.dag_ids if dag_id.startswith("elevation_")}


def test_retries_are_as_the_readme_says(parsed_dags: dict) -> None:
    """Every scheduled DAG's tasks and the approval's retry, so a passing error pages nobody; every-minute ones
    within a minute (before the next run could start: they run one at a time); the forms never retry."""
    every_minute = {dag_id for dag_id, dag in parsed_dags.items()
                    if getattr(dag.timetable, "expression", None) == "* * * * *"}
    assert every_minute == {"elevation_intake", "elevation_grants", "elevation_revocations", "elevation_notify",
                            "elevation_approval_dispatch"}
    assert set(parsed_dags) > NOT_RETRIED
    for dag_id, dag in parsed_dags.items():
        for task in dag.tasks:
            where = (dag_id, task.task_id)
            if dag_id in NOT_RETRIED:
                assert task.retries == 0, where
                continue
            assert task.retries >= 1, where
            if dag_id != "elevation_approval":
                assert task.retries <= 2, where  # "once or twice": a lasting failure still alerts within minutes
            if dag_id in every_minute:
                assert task.retry_delay <= timedelta(minutes=1), where
    approval = parsed_dags["elevation_approval"]
    assert {task.task_id: task.retries for task in approval.tasks} == {"ask": 2, "apply": 3}
