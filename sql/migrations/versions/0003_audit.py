"""Audit results per session: provisional while the audit window is open, final once; announced once.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "elevation_audit",
        sa.Column("request_id", sa.Integer, sa.ForeignKey("elevation_request.id"), primary_key=True),
        sa.Column("night", sa.String(10), nullable=False),  # the night of the latest audit (YYYY-MM-DD)
        sa.Column("state", sa.String(16), nullable=False),  # provisional | final
        sa.Column("events", sa.Integer, nullable=False),
        sa.Column("writes", sa.Integer, nullable=False),
        sa.Column("findings", sa.Text, nullable=False),  # JSON {severity: count}
        sa.Column("flags", sa.Integer, nullable=False),
        sa.Column("worst", sa.String(16), nullable=True),
        sa.Column("report", sa.Text, nullable=False),  # where the HTML report is
        sa.Column("audited_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("announced_at", sa.DateTime(timezone=True), nullable=True),  # set by the notifier, once
    )


def downgrade() -> None:
    op.drop_table("elevation_audit")
