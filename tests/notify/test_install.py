"""This installation's id (migration 0009): made once, the same for every sender, on SQLite and PostgreSQL."""

from __future__ import annotations

import threading

import sqlalchemy as sa

from elevation.notify.install import install_id
from elevation.store.database import create_engine_for_url
from elevation.store.migrations import _config, current_revision, upgrade
from elevation.store.tables import installation


def test_the_id_is_made_once_and_senders_starting_together_agree_on_it(empty_database):
    upgrade(create_engine_for_url(empty_database))
    engines = [create_engine_for_url(empty_database) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    seen: list[str] = []

    def first_use(engine):
        barrier.wait()
        seen.append(install_id(engine))

    threads = [threading.Thread(target=first_use, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(seen) == len(engines) and len(set(seen)) == 1 and len(seen[0]) == 32
    assert install_id(engines[0]) == seen[0]
    with engines[0].connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(installation)).scalar() == 1


def test_migration_0009_downgrades_and_upgrades_again(empty_database):
    from alembic import command

    engine = create_engine_for_url(empty_database)
    upgrade(engine)
    install_id(engine)
    with engine.begin() as conn:
        command.downgrade(_config(conn), "0008")
    assert current_revision(engine) == "0008"
    assert "elevation_installation" not in sa.inspect(engine).get_table_names()
    upgrade(engine)
    assert current_revision(engine) == "0009" and install_id(engine)
