#!/usr/bin/env bash
# PostgreSQL's first start (docker-compose.yaml mounts this into /docker-entrypoint-initdb.d): next to Airflow's
# metadata database (POSTGRES_DB, owned by the superuser POSTGRES_USER), the queue database `elevation`, owned by
# an ordinary role `elevation` that the DAGs connect as and that runs the migrations (`elevation db upgrade`).
#
# The role gets CREATEROLE only so that airflow-init can apply sql/postgresql_intake_role.sql, which creates the
# roles outside systems log in with (elevation_intake, elevation_decisions) the first time. It is no superuser and
# has no BYPASSRLS: the row-level security that script sets up binds every role but the tables' owner.
#
# PostgreSQL runs this only when its data volume is empty. On an existing volume, run the same statements by hand:
#   docker compose exec postgres psql -U airflow -c "CREATE ROLE elevation LOGIN CREATEROLE PASSWORD '...'"
#   docker compose exec postgres psql -U airflow -c "CREATE DATABASE elevation OWNER elevation"
set -euo pipefail

: "${ELEVATION_DB_PASSWORD:?set ELEVATION_DB_PASSWORD (see .env.example)}"

psql --set=ON_ERROR_STOP=1 --set=password="${ELEVATION_DB_PASSWORD}" \
    --username "${POSTGRES_USER}" --dbname "${POSTGRES_DB}" <<'SQL'
CREATE ROLE elevation LOGIN CREATEROLE PASSWORD :'password';
CREATE DATABASE elevation OWNER elevation;
SQL
