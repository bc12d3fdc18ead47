#!/usr/bin/env bash
# Write .env for docker-compose.yaml from .env.example, with a fresh random value for every `change-me` (a Fernet
# key for AIRFLOW_FERNET_KEY, 48 hex digits otherwise); every other line as it is. Never overwrites a file.
#   deploy/compose/new-env.sh [TARGET]      (default: .env beside docker-compose.yaml; needs openssl)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
example="${here}/.env.example"
target="${1:-${here}/.env}"

if [[ -e "${target}" ]]; then
    echo "${target} exists: left as it is (delete it first to start over)" >&2
    exit 1
fi

umask 077
partial="${target}.partial"
while IFS= read -r line || [[ -n "${line}" ]]; do
    if [[ "${line}" =~ ^([A-Z0-9_]+)=change-me$ ]]; then
        name="${BASH_REMATCH[1]}"
        if [[ "${name}" == "AIRFLOW_FERNET_KEY" ]]; then
            value="$(openssl rand -base64 32 | tr '+/' '-_')"
        else
            value="$(openssl rand -hex 32)"
        fi
        line="${name}=${value}"
    fi
    printf '%s\n' "${line}"
done <"${example}" >"${partial}"
mv "${partial}" "${target}"
echo "wrote ${target}: secrets generated; review the AWS and Airflow settings before \`docker compose up\`" >&2
