#!/usr/bin/env bash
# docker-compose.yaml's one-shot `airflow-init`: everything a first start and every upgrade need before the Airflow
# components start (they wait for this to complete successfully). Every step is idempotent.
set -euo pipefail

say() { echo "airflow-init: $*" >&2; }

say "Airflow $(airflow version), elevation $(python -c 'import importlib.metadata as m; print(m.version("elevation"))')"

# 1. Airflow's metadata database, to this Airflow version's schema.
airflow db migrate

# 2. The queue database, to this image's schema (sql/migrations), and the grant task's Airflow pool
#    elevation_identity_center: `elevation db upgrade` creates it where Airflow's metadata database is configured,
#    as here (an existing pool keeps its slots). It only warns when it cannot, so the pool is checked after.
elevation db upgrade --database-url "${ELEVATION_DATABASE_URL:?}"
if ! airflow pools get elevation_identity_center >/dev/null; then
    say "the Airflow pool elevation_identity_center is missing: grants would wait forever"
    exit 1
fi

# 3. The roles outside systems log in with to file requests and decisions (sql/postgresql_intake_role.sql,
#    shipped in the package; re-applied after every upgrade, as the script asks). The queue database's owner runs
#    it: docker-compose's PostgreSQL init script gave it CREATEROLE for the two roles' first creation.
python - <<'PY'
import os

import sqlalchemy as sa

from elevation.resources import data_path

engine = sa.create_engine(os.environ["ELEVATION_DATABASE_URL"])
if engine.dialect.name == "postgresql":
    with engine.begin() as conn:
        conn.exec_driver_sql((data_path("sql") / "postgresql_intake_role.sql").read_text(encoding="utf-8"))
    print("airflow-init: roles elevation_intake and elevation_decisions applied", flush=True)
PY

# 4. The connections come from the AIRFLOW_CONN_* variables of docker-compose.yaml (nothing is stored in the
#    metadata database): check that each one parses (a value broken by a quote in .env reads as missing).
python - <<'PY'
import os
import sys

from airflow.models.connection import Connection

broken = []
for name in sorted(key for key in os.environ if key.startswith("AIRFLOW_CONN_")):
    conn_id = name.removeprefix("AIRFLOW_CONN_").lower()
    try:
        Connection.get_connection_from_secrets(conn_id)
    except Exception as error:  # AirflowNotFoundException when the JSON does not parse
        broken.append(f"{name}: {error}")
if broken:
    sys.exit("airflow-init: connections that do not parse (check the values in .env):\n  " + "\n  ".join(broken))
print("airflow-init: connections ok", flush=True)
PY

# 5. The Airflow users of the Simple auth manager (AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS): the admin and the API
#    user of the connection elevation_airflow_api get their passwords from .env; the demo's people theirs from the
#    demo overlay (written to the demo's own passwords file: entrypoint.sh points the variable there in the demo);
#    any other user listed gets a random password once, kept in the passwords file and never logged.
python - <<'PY'
import json
import os
import sys
from pathlib import Path

users = [entry.split(":")[0].strip() for entry in os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"].split(",")
         if entry.strip()]
api_user = json.loads(os.environ["AIRFLOW_CONN_ELEVATION_AIRFLOW_API"])["login"]
missing = [user for user in ("admin", api_user) if user not in users]
if missing:
    sys.exit(f"airflow-init: AIRFLOW_USERS must list {' and '.join(missing)} (see .env.example)")
path = Path(os.environ["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"])
passwords = json.loads(path.read_text(encoding="utf-8") or "{}") if path.exists() else {}
if os.environ.get("ELEVATION_DEMO_PASSWORDS"):
    passwords.update(json.loads(Path(os.environ["ELEVATION_DEMO_PASSWORDS"]).read_text(encoding="utf-8")))
passwords["admin"] = os.environ["AIRFLOW_ADMIN_PASSWORD"]
passwords[api_user] = json.loads(os.environ["AIRFLOW_CONN_ELEVATION_AIRFLOW_API"])["password"]
# Every other user gets a random password here, once (never logged: the API server would print the ones it
# makes up to its log). The admin hands each person theirs from this file.
import secrets

created = [user for user in users if user not in passwords]
for user in created:
    passwords[user] = secrets.token_urlsafe(18)
partial = path.with_name(path.name + ".partial")
partial.write_text(json.dumps(passwords) + "\n", encoding="utf-8")
partial.chmod(0o600)
partial.replace(path)
print(f"airflow-init: Airflow users {', '.join(users)}", flush=True)
if created:
    print(f"airflow-init: new users {', '.join(created)}: their passwords are in {path} "
          f"(docker compose exec airflow-apiserver cat {path})", flush=True)
PY

say "done"
