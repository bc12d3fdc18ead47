"""Slack notifications: the outbox of messages to deliver, and the producer's cursors.

`elevation_outbox` holds one row per message and recipient. `dedup_key` is unique (`transition:<event id>:<to>`,
`ending:<request id>:<to>`, `audit:<request id>:<to>`, `digest:<night>`, ...), so producing the same thing twice
enqueues it once. `state` is pending | sent | skipped | failed; a sender claims due pending rows
(`claimed_by` / `claimed_until`, like the queue's claims) so two senders never send one message twice.
`elevation_notify_cursor` remembers how far the producer has read (the last `elevation_event` id it turned into
messages), so a restart neither repeats nor loses anything.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "elevation_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("dedup_key", sa.String(255), nullable=False, unique=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("request_id", sa.Integer, nullable=True),
        sa.Column("recipient", sa.Text, nullable=False),  # an email (a DM) or a channel (#name or id)
        sa.Column("payload", sa.Text, nullable=False),  # JSON: text and blocks
        sa.Column("state", sa.String(16), nullable=False),  # pending | sent | skipped | failed
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("slack_channel", sa.Text, nullable=True),
        sa.Column("slack_ts", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("claimed_by", sa.Text, nullable=True),
        sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("elevation_outbox_due", "elevation_outbox", ["state", "next_attempt_at"])
    op.create_table(
        "elevation_notify_cursor",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("position", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("elevation_notify_cursor")
    op.drop_index("elevation_outbox_due", table_name="elevation_outbox")
    op.drop_table("elevation_outbox")
