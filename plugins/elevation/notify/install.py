"""This installation's random id (`elevation_installation`, row `install_id`), carried in every Slack message's
metadata so a look-up for an earlier attempt never takes another deployment's message for ours: dedup keys such as
`digest:<night>` are the same in every deployment, and a staging may post to production's channels.

Made by the first sender that needs it (insert if absent, then read: concurrent senders agree on one), never changed
afterwards. A database copied into another deployment carries the same id; the look-up also requires the message
to come from our own bot, which tells them apart when that deployment has its own Slack app.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from elevation.store.tables import installation

INSTALL_ID = "install_id"


def install_id(engine: sa.Engine, *, now: datetime | None = None) -> str:
    """The id, made on first use (`now`: when, for `created_at`)."""
    with engine.begin() as conn:
        found = conn.execute(sa.select(installation.c.value).where(installation.c.name == INSTALL_ID)).scalar()
        if found:
            return str(found)
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        made = insert(installation).values(name=INSTALL_ID, value=uuid.uuid4().hex, created_at=now or datetime.now(UTC))
        conn.execute(made.on_conflict_do_nothing(index_elements=["name"]))
        return str(conn.execute(sa.select(installation.c.value).where(installation.c.name == INSTALL_ID)).scalar_one())
