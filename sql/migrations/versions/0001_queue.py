"""The request queue, action queue, sessions and the append-only event log.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "elevation_request",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        # --- written by outside systems (the public contract, see README) ---
        sa.Column("client_request_id", sa.String(128), nullable=True),
        sa.Column("requester", sa.Text, nullable=False),
        sa.Column("account_id", sa.Text, nullable=False),
        sa.Column("permission_set", sa.Text, nullable=False),
        sa.Column("principal_group", sa.Text, nullable=True),
        sa.Column("start_at", TZ, nullable=True),
        sa.Column("duration_minutes", sa.Integer, nullable=False),
        sa.Column("justification", sa.Text, nullable=True),
        sa.Column("ticket", sa.Text, nullable=True),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("approver", sa.Text, nullable=True),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.current_timestamp()),
        # --- written only by the system (readable by outside systems) ---
        sa.Column("reason_code", sa.String(64), nullable=True),
        sa.Column("status_reason", sa.Text, nullable=True),
        sa.Column("validated_at", TZ, nullable=True),
        sa.Column("decided_by", sa.Text, nullable=True),
        sa.Column("decided_at", TZ, nullable=True),
        sa.Column("auto_approval_rule", sa.Text, nullable=True),
        sa.Column("end_at", TZ, nullable=True),
        sa.Column("granted_at", TZ, nullable=True),
        sa.Column("ended_at", TZ, nullable=True),
        sa.Column("revoke_requested_at", TZ, nullable=True),
        sa.Column("revoke_requested_by", sa.Text, nullable=True),
        sa.Column("revoke_attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("claimed_by", sa.Text, nullable=True),
        sa.Column("claimed_until", TZ, nullable=True),
        sa.Column("updated_at", TZ, nullable=True),
    )
    op.create_index("ix_elevation_request_status", "elevation_request", ["status"])
    op.create_index("ix_elevation_request_client_request_id", "elevation_request", ["client_request_id"])

    op.create_table(
        "elevation_action",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.Integer, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("comment", sa.Text, nullable=True),
        sa.Column("created_at", TZ, nullable=False, server_default=sa.func.current_timestamp()),
        sa.Column("processed_at", TZ, nullable=True),
        sa.Column("outcome", sa.String(16), nullable=True),
        sa.Column("outcome_reason", sa.Text, nullable=True),
    )
    op.create_index("ix_elevation_action_unprocessed", "elevation_action", ["processed_at"])

    op.create_table(
        "elevation_session",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("request_id", sa.Integer, sa.ForeignKey("elevation_request.id"), nullable=False, unique=True),
        sa.Column("instance_arn", sa.Text, nullable=False),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("permission_set_name", sa.Text, nullable=False),
        sa.Column("permission_set_arn", sa.Text, nullable=False),
        sa.Column("permission_set_session_seconds", sa.Integer, nullable=False, server_default="3600"),
        sa.Column("principal_type", sa.String(8), nullable=False),
        sa.Column("principal_id", sa.Text, nullable=False),
        sa.Column("principal_name", sa.Text, nullable=False),
        sa.Column("group_members", sa.Text, nullable=True),  # JSON list of user names, for group grants
        sa.Column("creation_request_id", sa.Text, nullable=True),
        sa.Column("creation_status", sa.String(16), nullable=True),
        sa.Column("granted_at", TZ, nullable=True),
        sa.Column("deletion_request_id", sa.Text, nullable=True),
        sa.Column("deletion_status", sa.String(16), nullable=True),
        sa.Column("assignment_removed_at", TZ, nullable=True),
        sa.Column("kept_because", sa.Text, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index(
        "ix_elevation_session_triple",
        "elevation_session",
        ["account_id", "permission_set_arn", "principal_id"],
    )

    op.create_table(
        "elevation_event",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", TZ, nullable=False),
        sa.Column("request_id", sa.Integer, nullable=True),
        sa.Column("kind", sa.String(32), nullable=False),  # transition | aws_call | action | warning
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("from_status", sa.String(16), nullable=True),
        sa.Column("to_status", sa.String(16), nullable=True),
        sa.Column("reason_code", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),  # JSON
    )
    op.create_index("ix_elevation_event_request", "elevation_event", ["request_id"])


def downgrade() -> None:
    for table in ("elevation_event", "elevation_session", "elevation_action", "elevation_request"):
        op.drop_table(table)
