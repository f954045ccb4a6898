#!/usr/bin/env bash
# WSO2 pattern 4: the key manager as a layer of its own. A control plane, two key-manager
# nodes and a gateway, on one PostgreSQL. The key-manager nodes would sit behind one load
# balancer: its URL (KEY_MANAGER_URL) is their public URL, the issuer gateways trust, and the
# token endpoint the developer portal hands out. Both layers open the database's secrets with
# one sealing key. A revocation at either key-manager node reaches the gateway within a
# second (PostgreSQL LISTEN/NOTIFY, then the control plane's push).
# Control plane :9080, key managers :9443/:9444, gateway :8080 (admin :9901).
set -euo pipefail
export PORTICO_DATABASE_URL=${PORTICO_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/portico_pattern4}
export PORTICO_ADMIN_PASSWORD=${PORTICO_ADMIN_PASSWORD:-change-me-admin-1}
KEY_MANAGER_URL=${KEY_MANAGER_URL:-https://keys.example.com}
CP=http://127.0.0.1:9080
if [ -z "${PORTICO_SECRETS_KEY:-}" ]; then
  [ -f secrets.key ] || (umask 077 && openssl rand -hex 32 > secrets.key)
  export PORTICO_SECRETS_KEY_FILE=${PORTICO_SECRETS_KEY_FILE:-$PWD/secrets.key}
fi
trap 'kill $(jobs -p) 2>/dev/null' EXIT
psql "${PORTICO_DATABASE_URL%/*}/postgres" -c "CREATE DATABASE ${PORTICO_DATABASE_URL##*/}" 2>/dev/null || true

portico control-plane --data-dir .portico-cp --api 127.0.0.1:9080 --key-manager-url "$KEY_MANAGER_URL" &
until curl -sf -o /dev/null "$CP/readyz"; do sleep 0.2; done
for port in 9443 9444; do
  portico key-manager --api "127.0.0.1:$port" --public-url "$KEY_MANAGER_URL" &
done

# A gateway token for the `default` environment (shown once).
SESSION=$(curl -sf -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PORTICO_ADMIN_PASSWORD\"}" "$CP/api/v1/auth/login" | jq -r .token)
export PORTICO_GATEWAY_TOKEN=$(curl -sf -H "authorization: Bearer $SESSION" -H 'content-type: application/json' \
  -d '{"description":"pattern 4 gateway"}' "$CP/api/v1/environments/default/gateway-tokens" | jq -r .token)
portico gateway --control-plane "$CP" --environment default --cache-dir .portico-gw --listen 127.0.0.1:8080 --admin 127.0.0.1:9901 &
wait
