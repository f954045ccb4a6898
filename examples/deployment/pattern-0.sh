#!/usr/bin/env bash
# WSO2 pattern 0: one all-in-one process on embedded SQLite (data in ./.portico).
# Gateway :8080, control plane :9080, gateway admin :9901.
set -euo pipefail
export PORTICO_ADMIN_PASSWORD=${PORTICO_ADMIN_PASSWORD:-change-me-admin-1}
exec portico all-in-one --data-dir .portico
