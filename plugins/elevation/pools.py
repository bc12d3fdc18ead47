"""The Airflow pool the grant task runs in, named once here for the DAG files and for `elevation db upgrade`.

A task whose pool does not exist waits forever without a word, so `elevation db upgrade` creates it where Airflow
runs. Importing this module is cheap (Airflow is imported only to create the pool).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

#: One Identity Center assignment creation at a time: its API throttles, and a grant waits for its confirmation.
IDENTITY_CENTER_POOL = "elevation_identity_center"
IDENTITY_CENTER_POOL_SLOTS = 1
IDENTITY_CENTER_POOL_DESCRIPTION = "Identity Center assignment creations"

#: What an operator runs instead when `elevation db upgrade` cannot reach Airflow's metadata database.
CREATE_BY_HAND = (
    f'airflow pools set {IDENTITY_CENTER_POOL} {IDENTITY_CENTER_POOL_SLOTS} "{IDENTITY_CENTER_POOL_DESCRIPTION}"'
)


class PoolUnavailable(RuntimeError):
    """Airflow is not installed here or its metadata database cannot be used: the pool must be made by hand."""


def ensure_identity_center_pool() -> tuple[bool, int]:
    """Create the pool in Airflow's metadata database unless it exists; (created, its slots).

    An existing pool is left as it is: an administrator may have given it more slots on purpose."""
    import sqlalchemy as sa

    try:
        from airflow import settings
        from airflow.models.pool import Pool
        from airflow.utils.session import create_session
    except Exception as error:  # not installed, or its configuration does not load: either way, no pool from here
        raise PoolUnavailable(f"Airflow is not importable here: {_first_line(error)}") from error
    try:
        if settings.engine is None:
            settings.configure_orm()
        _check_usable(settings.engine)
        try:
            with create_session() as session:
                existing = session.scalar(sa.select(Pool).where(Pool.pool == IDENTITY_CENTER_POOL))
                if existing is not None:
                    return False, existing.slots
                session.add(Pool(pool=IDENTITY_CENTER_POOL, slots=IDENTITY_CENTER_POOL_SLOTS,
                                 description=IDENTITY_CENTER_POOL_DESCRIPTION, include_deferred=False))
            return True, IDENTITY_CENTER_POOL_SLOTS
        except sa.exc.IntegrityError:  # a concurrent upgrade created it between our read and our insert
            with create_session() as session:
                return False, session.scalar(sa.select(Pool.slots).where(Pool.pool == IDENTITY_CENTER_POOL))
    except sa.exc.SQLAlchemyError as error:
        raise PoolUnavailable(f"Airflow's metadata database is not reachable: {_first_line(error)}") from error


def _check_usable(engine: Engine) -> None:
    """Refuse a SQLite file that does not exist (connecting would create an empty one) and an unmigrated database."""
    import sqlalchemy as sa

    if engine.dialect.name == "sqlite":
        path = engine.url.database
        if path and path != ":memory:" and not Path(path).exists():
            raise PoolUnavailable(f"Airflow's metadata database {path} does not exist (run `airflow db migrate`)")
    if not sa.inspect(engine).has_table("slot_pool"):
        raise PoolUnavailable(
            f"Airflow's metadata database {engine.url!r} has no pools table (run `airflow db migrate`)"
        )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
