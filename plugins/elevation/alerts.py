"""Failure alerts of every DAG: a message to the admins' Slack channel through the Slack provider's notifier.

Wired as `on_failure_callback` in each DAG's default arguments. It says what failed (DAG, task, run, try), why (the
exception, escaped for Slack), and links to the task's log. It never raises: a broken Slack must not hide the failure
it reports (the task's own failure stays in Airflow). Off while `notifications.enabled` is false or no
`notifications.admin_channel` is set.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

#: Longest exception text put in an alert (the log has all of it).
MAX_ERROR_CHARS = 600


def failure_text(context: dict[str, Any]) -> str:
    """The alert's text (Slack mrkdwn, everything from the run escaped)."""
    from elevation.notify.messages import escape

    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", None) or getattr(context.get("dag"), "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = getattr(ti, "run_id", None) or context.get("run_id", "?")
    attempt = getattr(ti, "try_number", None)
    error = context.get("exception")
    lines = [f":rotating_light: *{escape(dag_id)}* task *{escape(task_id)}* failed",
             f"run `{escape(run_id)}`" + (f", try {attempt}" if attempt else "")]
    if error is not None:
        lines.append(f"> {escape(_redact(f'{type(error).__name__}: {error}'), MAX_ERROR_CHARS)}")
    url = getattr(ti, "log_url", None)
    if isinstance(url, str) and url.startswith(("http://", "https://")):
        lines.append(f"<{escape(url)}|Open the task's log>")
    return "\n".join(lines)


def _redact(text: str) -> str:
    """The text with every secret Airflow masks in task logs (connection passwords, sensitive variables) masked."""
    try:
        from airflow.sdk.log import redact

        return str(redact(text))
    except Exception:  # noqa: BLE001 - no masker: say less rather than leak
        return "(the error text is in the task's log)"


def task_failed(context: dict[str, Any]) -> None:
    """`on_failure_callback` of every DAG."""
    try:
        from elevation.config import load_config

        settings = load_config().notifications
        if not settings.enabled or not settings.admin_channel:
            log.info("failure alert not sent: notifications.enabled / admin_channel not set")
            return
        from airflow.providers.slack.notifications.slack import SlackNotifier

        notifier = SlackNotifier(slack_conn_id=settings.slack_conn_id, channel=settings.admin_channel,
                                 text=failure_text(context))
        notifier.notify(context)  # not __call__: the text is sent as it is, never rendered as a Jinja template
    except Exception as error:  # noqa: BLE001 - the alert must never mask the failure it reports
        log.warning("could not send the failure alert to Slack: %s", error)
