"""Heartbeats for outside monitors, and a guard: outside systems insert only pending or approved requests.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "elevation_heartbeat",
        sa.Column("job", sa.String(64), primary_key=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("as_of", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),  # ok | overdue | error
        sa.Column("detail", sa.Text, nullable=True),
    )
    # Only the system moves a request past approved; a row inserted in any other state is refused at the door.
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            """
            CREATE OR REPLACE FUNCTION elevation_request_insert_guard() RETURNS trigger AS $$
            BEGIN
                IF NEW.status NOT IN ('pending', 'approved') THEN
                    RAISE EXCEPTION 'elevation_request: insert with status pending or approved, not %', NEW.status;
                END IF;
                RETURN NEW;
            END
            $$ LANGUAGE plpgsql
            """
        )
        op.execute(
            "CREATE TRIGGER elevation_request_insert_guard BEFORE INSERT ON elevation_request "
            "FOR EACH ROW EXECUTE FUNCTION elevation_request_insert_guard()"
        )
    else:
        op.execute(
            "CREATE TRIGGER elevation_request_insert_guard BEFORE INSERT ON elevation_request "
            "WHEN NEW.status NOT IN ('pending', 'approved') "
            "BEGIN SELECT RAISE(ABORT, 'elevation_request: insert with status pending or approved'); END"
        )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS elevation_request_insert_guard" + (
        " ON elevation_request" if op.get_bind().dialect.name == "postgresql" else ""))
    op.drop_table("elevation_heartbeat")
