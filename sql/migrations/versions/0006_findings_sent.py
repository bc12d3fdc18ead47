"""Findings handed to the SIEM file, once each; the events a session's audit counted when it became final.

`elevation_finding` holds the stable key of every finding written to a night's `findings-<night>.jsonl` and the
night whose file holds it: a finding is written when its session's audit is final, in exactly one night's file
(a re-run of that night writes it again in the same file, which replaces the old one). `final_events` lets a later
run tell that events arrived late after the report was final, and say so on the report.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "elevation_finding",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("request_id", sa.Integer, sa.ForeignKey("elevation_request.id"), nullable=False),
        sa.Column("night", sa.String(10), nullable=False),  # the night whose findings file holds it
        sa.Column("rule_id", sa.Text, nullable=False),
        sa.Column("event_id", sa.Text, nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("written_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("elevation_finding_night", "elevation_finding", ["night"])
    op.create_index("elevation_finding_request", "elevation_finding", ["request_id"])
    with op.batch_alter_table("elevation_audit") as batch:
        batch.add_column(sa.Column("final_events", sa.Integer, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("elevation_audit") as batch:
        batch.drop_column("final_events")
    op.drop_index("elevation_finding_request", table_name="elevation_finding")
    op.drop_index("elevation_finding_night", table_name="elevation_finding")
    op.drop_table("elevation_finding")
