"""The tables as SQLAlchemy sees them. The migrations in `sql/migrations` create them; a test checks both agree."""

from __future__ import annotations

import sqlalchemy as sa

from elevation.store.database import UtcDateTime

metadata = sa.MetaData()

requests = sa.Table(
    "elevation_request",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("client_request_id", sa.String(128)),
    sa.Column("requester", sa.Text, nullable=False),
    sa.Column("account_id", sa.Text, nullable=False),
    sa.Column("permission_set", sa.Text, nullable=False),
    sa.Column("principal_group", sa.Text),
    sa.Column("start_at", UtcDateTime),
    sa.Column("duration_minutes", sa.Integer, nullable=False),
    sa.Column("justification", sa.Text),
    sa.Column("ticket", sa.Text),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("approver", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("reason_code", sa.String(64)),
    sa.Column("status_reason", sa.Text),
    sa.Column("validated_at", UtcDateTime),
    sa.Column("decided_by", sa.Text),
    sa.Column("decided_at", UtcDateTime),
    sa.Column("auto_approval_rule", sa.Text),
    sa.Column("end_at", UtcDateTime),
    sa.Column("granted_at", UtcDateTime),
    sa.Column("ended_at", UtcDateTime),
    sa.Column("revoke_requested_at", UtcDateTime),
    sa.Column("revoke_requested_by", sa.Text),
    sa.Column("revoke_attempts", sa.Integer, nullable=False),
    sa.Column("claimed_by", sa.Text),
    sa.Column("claimed_until", UtcDateTime),
    sa.Column("updated_at", UtcDateTime),
    sa.Column("submitted_by", sa.Text),
)

actions = sa.Table(
    "elevation_action",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.Integer, nullable=False),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("comment", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("processed_at", UtcDateTime),
    sa.Column("outcome", sa.String(16)),
    sa.Column("outcome_reason", sa.Text),
    sa.Column("claimed_by", sa.Text),
    sa.Column("claimed_until", UtcDateTime),
)

sessions = sa.Table(
    "elevation_session",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.Integer, sa.ForeignKey("elevation_request.id"), nullable=False, unique=True),
    sa.Column("instance_arn", sa.Text, nullable=False),
    sa.Column("account_id", sa.String(12), nullable=False),
    sa.Column("permission_set_name", sa.Text, nullable=False),
    sa.Column("permission_set_arn", sa.Text, nullable=False),
    sa.Column("permission_set_session_seconds", sa.Integer, nullable=False),
    sa.Column("principal_type", sa.String(8), nullable=False),
    sa.Column("principal_id", sa.Text, nullable=False),
    sa.Column("principal_name", sa.Text, nullable=False),
    sa.Column("group_members", sa.Text),
    sa.Column("creation_request_id", sa.Text),
    sa.Column("creation_status", sa.String(16)),
    sa.Column("granted_at", UtcDateTime),
    sa.Column("deletion_request_id", sa.Text),
    sa.Column("deletion_status", sa.String(16)),
    sa.Column("assignment_removed_at", UtcDateTime),
    sa.Column("kept_because", sa.Text),
    sa.Column("last_error", sa.Text),
    sa.Column("creation_sent_at", UtcDateTime),
    sa.Column("assignment_preexisted", sa.Boolean),
)

events = sa.Table(
    "elevation_event",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("request_id", sa.Integer),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("from_status", sa.String(16)),
    sa.Column("to_status", sa.String(16)),
    sa.Column("reason_code", sa.String(64)),
    sa.Column("detail", sa.Text),
)

heartbeats = sa.Table(
    "elevation_heartbeat",
    metadata,
    sa.Column("job", sa.String(64), primary_key=True),
    sa.Column("last_run_at", UtcDateTime, nullable=False),
    sa.Column("as_of", UtcDateTime, nullable=False),
    sa.Column("outcome", sa.String(16), nullable=False),
    sa.Column("detail", sa.Text),
)

audits = sa.Table(
    "elevation_audit",
    metadata,
    sa.Column("request_id", sa.Integer, sa.ForeignKey("elevation_request.id"), primary_key=True),
    sa.Column("night", sa.String(10), nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("events", sa.Integer, nullable=False),
    sa.Column("writes", sa.Integer, nullable=False),
    sa.Column("findings", sa.Text, nullable=False),
    sa.Column("flags", sa.Integer, nullable=False),
    sa.Column("worst", sa.String(16)),
    sa.Column("report", sa.Text, nullable=False),
    sa.Column("audited_at", UtcDateTime, nullable=False),
    sa.Column("finalized_at", UtcDateTime),
    sa.Column("announced_at", UtcDateTime),
    sa.Column("final_events", sa.Integer),
)

findings_sent = sa.Table(
    "elevation_finding",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("request_id", sa.Integer, sa.ForeignKey("elevation_request.id"), nullable=False),
    sa.Column("night", sa.String(10), nullable=False),
    sa.Column("rule_id", sa.Text, nullable=False),
    sa.Column("event_id", sa.Text, nullable=False),
    sa.Column("severity", sa.String(16), nullable=False),
    sa.Column("written_at", UtcDateTime, nullable=False),
    sa.Index("elevation_finding_night", "night"),
    sa.Index("elevation_finding_request", "request_id"),
)

drift = sa.Table(
    "elevation_drift",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("principal_type", sa.String(8), nullable=False),
    sa.Column("principal_id", sa.Text, nullable=False),
    sa.Column("principal_name", sa.Text),
    sa.Column("permission_set_arn", sa.Text, nullable=False),
    sa.Column("permission_set_name", sa.Text),
    sa.Column("account_id", sa.String(12), nullable=False),
    sa.Column("request_id", sa.Integer),
    sa.Column("detail", sa.Text),
    sa.Column("first_seen_at", UtcDateTime, nullable=False),
    sa.Column("last_seen_at", UtcDateTime, nullable=False),
    sa.Column("resolved_at", UtcDateTime),
    sa.Column("resolution", sa.Text),
)

outbox = sa.Table(
    "elevation_outbox",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("dedup_key", sa.String(255), nullable=False, unique=True),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("request_id", sa.Integer),
    sa.Column("recipient", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_at", UtcDateTime, nullable=False),
    sa.Column("last_error", sa.Text),
    sa.Column("slack_channel", sa.Text),
    sa.Column("slack_ts", sa.Text),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("sent_at", UtcDateTime),
    sa.Column("claimed_by", sa.Text),
    sa.Column("claimed_until", UtcDateTime),
    sa.Column("sending_at", UtcDateTime),  # 0008: the first attempt to post it (then look before posting again)
    sa.Index("elevation_outbox_due", "state", "next_attempt_at"),
)

notify_cursors = sa.Table(
    "elevation_notify_cursor",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("position", sa.Integer, nullable=False),
    sa.Column("updated_at", UtcDateTime, nullable=False),
)

#: 0009: facts about this installation, made once (`install_id`: a random id Slack messages carry in their metadata,
#: so a look-up never takes another deployment's message with the same dedup key for ours).
installation = sa.Table(
    "elevation_installation",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
)
