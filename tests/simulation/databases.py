"""A fresh, migrated queue for each simulated day, and for each replay while shrinking; removed afterwards."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import sqlalchemy as sa


class Databases:
    """Hands out a fresh queue for a day (and for each replay while shrinking), and removes it afterwards."""

    def __init__(self, request: pytest.FixtureRequest, backend: str, workdir: Path) -> None:
        self.request, self.backend, self.workdir = request, backend, workdir
        self.made: list[str] = []

    def fresh(self, seed: int) -> str:
        if self.backend == "sqlite":
            path = self.workdir / f"queue-{seed}-{len(self.made)}.db"
            shutil.copyfile(self.request.getfixturevalue("sqlite_template"), path)
            self.made.append(str(path))
            return f"sqlite:///{path}"
        admin, template = self.request.getfixturevalue("postgres_template")
        name = f"{template}_day_{seed}_{len(self.made)}"
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        self.made.append(name)
        return admin.url.set(database=name).render_as_string(hide_password=False)

    def remove_all(self) -> None:
        for made in self.made:
            if self.backend == "sqlite":
                Path(made).unlink(missing_ok=True)
            else:
                admin, _ = self.request.getfixturevalue("postgres_template")
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{made}" WITH (FORCE)'))
