#!/usr/bin/env bash
# The entrypoint of every Airflow container of docker-compose.yaml: the demo overlay if it applies, then the
# Airflow image's own entrypoint (/entrypoint: waits for the database, runs `airflow <command>`).
#
# The demo profile's one-shot `demo-seed` writes the overlay (/opt/airflow/demo/airflow.env, see
# elevation.devkit.compose_demo): ELEVATION_CONFIG and the AWS connections pointed at the emulator, the demo
# people as Airflow users. It applies only while an emulator answers at the overlay's ELEVATION_EMULATOR_URL,
# that is while the demo profile runs in this project: without the profile the service name does not resolve
# and the containers keep the settings of .env, even if a demo volume was left behind.
set -euo pipefail

overlay="${ELEVATION_DEMO_OVERLAY:-/opt/airflow/demo/airflow.env}"
if [[ -f "${overlay}" ]]; then
    url="$(sed -n "s/^export ELEVATION_EMULATOR_URL=//p" "${overlay}" | tr -d "'")"
    if [[ -n "${url}" ]] && curl --silent --fail --max-time 5 --output /dev/null "${url}/_emulator/status"; then
        set -a
        # shellcheck source=/dev/null
        . "${overlay}"
        set +a
        if [[ -n "${ELEVATION_DEMO_USERS:-}" ]]; then
            export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS:+${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS},}${ELEVATION_DEMO_USERS}"
        fi
        # The demo's people have known passwords: they go into a passwords file of the demo's own, never into the
        # deployment's (where a login added to AIRFLOW_USERS later would otherwise find the demo's password).
        if [[ -n "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:-}" ]]; then
            export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE%.json}.demo.json"
        fi
        echo "elevation: demo profile: AWS connections point at the emulator ${url}; configuration ${ELEVATION_CONFIG}" >&2
    else
        echo "elevation: ${overlay} ignored: no AWS emulator answers at '${url}' (the demo profile is not running)" >&2
    fi
fi

exec "${AIRFLOW_IMAGE_ENTRYPOINT:-/entrypoint}" "$@"
