"""DAG files stay thin: they import cleanly, document themselves, and pull in nothing heavy at parse time.

Parse time itself is measured in benchmarks/, not asserted here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DAG_FILES = sorted((REPO / "dags").glob("*.py"))
HEAVY = ("pandas", "pyarrow", "duckdb", "boto3", "botocore", "slack_sdk", "sigma", "sqlglot", "moto")


def test_every_dag_file_imports_and_is_documented_tagged_and_owned(dagbag):
    assert {path.stem for path in DAG_FILES} <= set(dagbag.dag_ids)
    for dag_id in dagbag.dag_ids:
        dag = dagbag.get_dag(dag_id)
        assert dag.tags, f"{dag_id} has no tags"
        assert dag.doc_md and len(dag.doc_md.strip()) > 80, f"{dag_id} has no docs for the UI"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_importing_a_dag_file_imports_no_heavy_module(path):
    probe = (
        "import importlib.util, json, sys\n"
        f"spec = importlib.util.spec_from_file_location('dag_under_test', {str(path)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})))\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=os.environ)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


PLUGIN_PROBE = """
import json, sys
from airflow import plugins_manager
plugins_manager.ensure_plugins_loaded()
folder = sys.argv[1]
# A module whose file lies in the package but which is registered under a name outside `elevation.`.
leaked = [name for name, module in list(sys.modules.items())
          if not name.startswith('elevation') and folder in str(getattr(module, '__file__', '') or '')]
print(json.dumps(sorted(leaked)))
"""


def _bare_modules_after_loading_plugins(plugins_folder: Path) -> list[str]:
    env = {**os.environ, "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins_folder)}
    out = subprocess.run([sys.executable, "-c", PLUGIN_PROBE, str(plugins_folder / "elevation")],
                         capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_loading_airflows_plugins_puts_none_of_the_package_under_a_bare_name(tmp_path):
    assert _bare_modules_after_loading_plugins(REPO / "plugins") == []
    # The same folder without .airflowignore shows what the ignore file prevents.
    unguarded = tmp_path / "plugins"
    shutil.copytree(REPO / "plugins", unguarded, ignore=shutil.ignore_patterns(".airflowignore", "__pycache__"))
    leaked = _bare_modules_after_loading_plugins(unguarded)
    assert {"lifecycle", "grants", "policy"} <= set(leaked)


def test_intake_never_waits_behind_granting(dagbag):
    from elevation.pools import IDENTITY_CENTER_POOL

    intake, grants = dagbag.get_dag("elevation_intake"), dagbag.get_dag("elevation_grants")
    assert [task.task_id for task in intake.tasks] == ["intake"]
    assert intake.tasks[0].pool == "default_pool"  # a missing grant pool cannot hold up decisions and validation
    assert [(task.task_id, task.pool) for task in grants.tasks] == [("grant", IDENTITY_CENTER_POOL)]


def test_intake_fails_loudly_when_approved_requests_are_not_being_granted(world, file_request, run_dag):
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    file_request(requester="dave", account_id="media-prod", permission_set="AdministratorAccess", start_at=now)
    assert run_dag("elevation_intake", now).state == "success"  # approved by policy; now elevation_grants never runs
    assert run_dag("elevation_intake", now + timedelta(minutes=16)).state == "failed"
