#!/usr/bin/env bash
# WSO2 pattern 1: two all-in-one nodes on one PostgreSQL, behind a load balancer that
# sends API traffic to :8080/:8081 and management traffic to :9080/:9081. Both nodes
# share one public URL (the OAuth2 issuer). A change made through either node reaches both
# gateways (PostgreSQL LISTEN/NOTIFY). Rate counters are per node. Both nodes seal the
# database's secrets (signing keys, the API-key HMAC secret) with one key: keep it outside
# the database, as its backups are.
set -euo pipefail
export PORTICO_DATABASE_URL=${PORTICO_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/portico}
export PORTICO_ADMIN_PASSWORD=${PORTICO_ADMIN_PASSWORD:-change-me-admin-1}
PUBLIC_URL=${PUBLIC_URL:-https://api.example.com}
if [ -z "${PORTICO_SECRETS_KEY:-}" ]; then
  [ -f secrets.key ] || (umask 077 && openssl rand -hex 32 > secrets.key)
  export PORTICO_SECRETS_KEY_FILE=${PORTICO_SECRETS_KEY_FILE:-$PWD/secrets.key}
fi
psql "${PORTICO_DATABASE_URL%/*}/postgres" -c "CREATE DATABASE ${PORTICO_DATABASE_URL##*/}" 2>/dev/null || true
portico all-in-one --data-dir .portico-1 --public-url "$PUBLIC_URL" --gateway 127.0.0.1:8080 --api 127.0.0.1:9080 --admin 127.0.0.1:9901 --gateway-id node-1 &
portico all-in-one --data-dir .portico-2 --public-url "$PUBLIC_URL" --gateway 127.0.0.1:8081 --api 127.0.0.1:9081 --admin 127.0.0.1:9902 --gateway-id node-2 &
wait
