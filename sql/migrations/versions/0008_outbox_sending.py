"""Slack notifications exactly once: the outbox remembers that a send was attempted.

`sending_at` is set (once, at the first attempt) just before `chat.postMessage`, in its own transaction. A sender
that finds it set on a row still `pending` cannot know whether Slack got the earlier attempt (the worker died
between Slack's answer and recording it, or the answer was lost), so it first looks for the message in the
conversation (`conversations.history` from shortly before `sending_at`; each message carries its `dedup_key` in
Slack message metadata) and records the one it finds instead of posting again.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("elevation_outbox") as batch:
        batch.add_column(sa.Column("sending_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("elevation_outbox") as batch:
        batch.drop_column("sending_at")
