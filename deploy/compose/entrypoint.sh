#!/usr/bin/env bash
# The entrypoint of every Airflow container of docker-compose.yaml: the demo overlay if it applies, then the
# Airflow image's own entrypoint (/entrypoint: waits for the database, runs `airflow <command>`).
#
# The demo profile's one-shot `demo-seed` writes the overlay (/opt/airflow/demo/airflow.env, see
# elevation.devkit.compose_demo): ELEVATION_CONFIG and the AWS connections pointed at the emulator, the demo
# people as Airflow users. It applies only when asked for, ELEVATION_DEMO_MODE=true (set in .env of a demo
# project, never in a deployment's), and while an emulator answers at the overlay's ELEVATION_EMULATOR_URL. A
# deployment never probes for an emulator: a demo container or volume left behind cannot point it at one.
set -euo pipefail

overlay="${ELEVATION_DEMO_OVERLAY:-/opt/airflow/demo/airflow.env}"
if [[ "${ELEVATION_DEMO_MODE:-false}" != "true" ]]; then
    if [[ -f "${overlay}" ]]; then
        echo "elevation: ${overlay} ignored: ELEVATION_DEMO_MODE is not true (this is not a demo project)" >&2
    fi
elif [[ ! -f "${overlay}" ]]; then
    echo "elevation: ELEVATION_DEMO_MODE=true but no demo overlay at ${overlay} (is the demo profile running?)" >&2
    exit 1
else
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
        echo "elevation: ELEVATION_DEMO_MODE=true but no AWS emulator answers at '${url}' (is the demo profile running?)" >&2
        exit 1
    fi
fi

exec "${AIRFLOW_IMAGE_ENTRYPOINT:-/entrypoint}" "$@"
