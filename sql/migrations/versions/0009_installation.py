"""Slack notifications: this installation's own random id, so its messages are told from another deployment's.

Dedup keys repeat across deployments (`digest:<night>`, `transition:<event id>:...`), and a staging or a demo may
post to the same channel as production. Each message's Slack metadata therefore also names the installation
(`elevation_installation` row `install_id`, a random id made by the first sender that needs it), and a look-up for
an earlier attempt takes only a message carrying both the row's key and this id (and posted by our own bot).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "elevation_installation",
        sa.Column("name", sa.String(64), primary_key=True),  # install_id
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("elevation_installation")
