"""Drift items found by reconcile: one row per (principal, permission set, account, kind) while it lasts.

A drift open for days is one row whose `last_seen_at` moves, not one row per run; it is resolved (`resolved_at`,
`resolution`) when a run no longer sees it or removes it. A partial unique index keeps one open row per item.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "elevation_drift",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(16), nullable=False),  # unexpected | lingering | missing
        sa.Column("principal_type", sa.String(8), nullable=False),  # USER | GROUP
        sa.Column("principal_id", sa.Text, nullable=False),
        sa.Column("principal_name", sa.Text, nullable=True),
        sa.Column("permission_set_arn", sa.Text, nullable=False),
        sa.Column("permission_set_name", sa.Text, nullable=True),
        sa.Column("account_id", sa.String(12), nullable=False),
        sa.Column("request_id", sa.Integer, nullable=True),  # the session it belongs or belonged to
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("resolution", sa.Text, nullable=True),  # removed by reconcile | recreated by reconcile | gone
    )
    op.create_index(
        "elevation_drift_open_item",
        "elevation_drift",
        ["principal_type", "principal_id", "permission_set_arn", "account_id", "kind"],
        unique=True,
        postgresql_where=sa.text("resolved_at IS NULL"),
        sqlite_where=sa.text("resolved_at IS NULL"),
    )


def downgrade() -> None:
    op.drop_index("elevation_drift_open_item", table_name="elevation_drift")
    op.drop_table("elevation_drift")
