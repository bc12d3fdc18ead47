"""Hardening: what a crashed worker leaves behind is findable, actions are claimed once, absurd rows are refused.

- `elevation_session.creation_sent_at`: set *before* CreateAccountAssignment is sent, so a worker killed between
  the call and recording its request id still leaves a trace that access may exist (it then ends only through a
  confirmed removal).
- `elevation_session.assignment_preexisted`: the assignment already existed, created outside this system, when the
  session was granted; it is never removed at the session's end (a human decides).
- `elevation_action.claimed_by` / `claimed_until`: actions are claimed like requests, so each is applied once.
- `elevation_request.submitted_by`: the database role that inserted the row (PostgreSQL: `current_user`), so
  `client_request_id` is unique per writer and the intake role sees only its own rows.
- Sensible values at insert: `duration_minutes` from 1 to a year, `start_at` between 2000 and 2200. On PostgreSQL
  as check constraints (NOT VALID: existing rows are judged by intake, not by the migration); on SQLite, which
  cannot add constraints to a table, as an insert trigger.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

MAX_DURATION_MINUTES = 366 * 24 * 60


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    op.add_column("elevation_session", sa.Column("creation_sent_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("elevation_session", sa.Column("assignment_preexisted", sa.Boolean, nullable=True))
    op.add_column("elevation_action", sa.Column("claimed_by", sa.Text, nullable=True))
    op.add_column("elevation_action", sa.Column("claimed_until", sa.DateTime(timezone=True), nullable=True))
    op.add_column(
        "elevation_request",
        sa.Column(
            "submitted_by", sa.Text, nullable=True, server_default=sa.text("current_user") if postgres else None
        ),
    )
    if postgres:
        op.execute(
            "ALTER TABLE elevation_request ADD CONSTRAINT elevation_request_sensible_start "
            "CHECK (start_at IS NULL OR (start_at >= '2000-01-01 00:00+00' AND start_at < '2200-01-01 00:00+00')) "
            "NOT VALID"
        )
        op.execute(
            "ALTER TABLE elevation_request ADD CONSTRAINT elevation_request_sensible_duration "
            f"CHECK (duration_minutes BETWEEN 1 AND {MAX_DURATION_MINUTES}) NOT VALID"
        )
    else:
        op.execute(
            "CREATE TRIGGER elevation_request_sensible_values BEFORE INSERT ON elevation_request "
            f"WHEN NEW.duration_minutes IS NULL OR typeof(NEW.duration_minutes) != 'integer' "
            f"OR NEW.duration_minutes < 1 OR NEW.duration_minutes > {MAX_DURATION_MINUTES} "
            "OR (NEW.start_at IS NOT NULL AND (typeof(NEW.start_at) != 'text' "
            "    OR substr(NEW.start_at, 1, 4) < '2000' OR substr(NEW.start_at, 1, 4) >= '2200')) "
            "BEGIN SELECT RAISE(ABORT, 'elevation_request: duration_minutes must be 1 to 527040 and start_at "
            "an ISO 8601 time between 2000 and 2200'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE elevation_request DROP CONSTRAINT IF EXISTS elevation_request_sensible_start")
        op.execute("ALTER TABLE elevation_request DROP CONSTRAINT IF EXISTS elevation_request_sensible_duration")
    else:
        op.execute("DROP TRIGGER IF EXISTS elevation_request_sensible_values")
    with op.batch_alter_table("elevation_request") as batch:
        batch.drop_column("submitted_by")
    with op.batch_alter_table("elevation_action") as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
    with op.batch_alter_table("elevation_session") as batch:
        batch.drop_column("assignment_preexisted")
        batch.drop_column("creation_sent_at")
