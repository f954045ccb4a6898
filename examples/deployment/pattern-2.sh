#!/usr/bin/env bash
# WSO2 pattern 2: one control plane and two gateways fed over the network, each with its
# last-known-good cache. Gateways :8080/:8081 (admin :9901/:9902), control plane :9080.
set -euo pipefail
export PORTICO_ADMIN_PASSWORD=${PORTICO_ADMIN_PASSWORD:-change-me-admin-1}
CP=http://127.0.0.1:9080
portico control-plane --data-dir .portico-cp --api 127.0.0.1:9080 &
until curl -sf -o /dev/null "$CP/api/v1/openapi.json"; do sleep 0.2; done

# A gateway token for the `default` environment (shown once).
SESSION=$(curl -sf -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PORTICO_ADMIN_PASSWORD\"}" "$CP/api/v1/auth/login" | jq -r .token)
export PORTICO_GATEWAY_TOKEN=$(curl -sf -H "authorization: Bearer $SESSION" -H 'content-type: application/json' \
  -d '{"description":"pattern 2 gateways"}' "$CP/api/v1/environments/default/gateway-tokens" | jq -r .token)

portico gateway --control-plane "$CP" --environment default --cache-dir .portico-gw-1 --listen 127.0.0.1:8080 --admin 127.0.0.1:9901 &
portico gateway --control-plane "$CP" --environment default --cache-dir .portico-gw-2 --listen 127.0.0.1:8081 --admin 127.0.0.1:9902 &
wait
