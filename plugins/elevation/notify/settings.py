"""The `notifications` section of the configuration: where Slack messages go and when.

Every field has a default, so the section may be omitted. Notifications are **off** until `enabled: true`: a
deployment without a Slack connection must not pile up undeliverable messages (nor fail a run every minute).
"""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel, ConfigDict, Field, field_validator

from elevation.access.policy import Duration


class NotifySettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False  # off until set: nothing is produced or sent, the cursor is not started
    slack_conn_id: str = "slack_api_default"  # an Airflow Slack API connection (token as password; extra base_url)
    security_channel: str | None = None  # `#name` or a channel id: audit results of auto-approved sessions, digest
    admin_channel: str | None = None  # grant failed, revoke failed, revoke overdue, approvers not found
    ending_soon: Duration = timedelta(minutes=10)  # the requester is told this long before the session ends
    audit_base_url: str | None = None  # how people reach the reports; falls back to `audit.base_url`
    # The first run after enabling starts with events (and final audits) this recent; older ones are not announced.
    first_run_lookback: Duration = timedelta(hours=1)
    retry_initial: Duration = timedelta(seconds=30)  # 5xx / network errors: 30s, 60s, 120s, ... up to retry_max
    retry_max: Duration = timedelta(minutes=30)
    max_attempts: int = Field(10, ge=1)  # then the message is `failed` (visible on the heartbeat)
    stuck_after: Duration = timedelta(minutes=30)  # a pending message older than this marks the heartbeat `stuck`
    digest_after: Duration = timedelta(minutes=15)  # a night's digest waits this long after its last audit row

    @field_validator("security_channel", "admin_channel")
    @classmethod
    def _channel(cls, value: str | None) -> str | None:
        if value is not None and ("@" in value or not value.strip()):
            raise ValueError("give a channel as #name or a channel id (C0123ABCD), not a person")
        return value.strip() if value else value
