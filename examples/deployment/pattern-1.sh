#!/usr/bin/env bash
# WSO2 pattern 1: two all-in-one nodes on one PostgreSQL, behind a load balancer that
# sends API traffic to :8080/:8081 and management traffic to :9080/:9081. Both nodes
# share one public URL (the OAuth2 issuer). A change made through either node reaches both
# gateways (PostgreSQL LISTEN/NOTIFY). Rate counters are per node.
set -euo pipefail
export PORTICO_DATABASE_URL=${PORTICO_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/portico}
export PORTICO_ADMIN_PASSWORD=${PORTICO_ADMIN_PASSWORD:-change-me-admin-1}
PUBLIC_URL=${PUBLIC_URL:-https://api.example.com}
psql "${PORTICO_DATABASE_URL%/*}/postgres" -c "CREATE DATABASE ${PORTICO_DATABASE_URL##*/}" 2>/dev/null || true
portico all-in-one --data-dir .portico-1 --public-url "$PUBLIC_URL" --gateway 127.0.0.1:8080 --api 127.0.0.1:9080 --admin 127.0.0.1:9901 --gateway-id node-1 &
portico all-in-one --data-dir .portico-2 --public-url "$PUBLIC_URL" --gateway 127.0.0.1:8081 --api 127.0.0.1:9081 --admin 127.0.0.1:9902 --gateway-id node-2 &
wait
