#!/usr/bin/env bash
# Multi-datacenter, active-active: two regions, each with its own control plane (its own key
# manager) on its own PostgreSQL database and its own gateways. Each control plane reads the
# other region's log of changes (--peer-database-url) and applies it, the last writer of a
# row winning; either region publishes, issues and serves while the other is down, and they
# converge when the link is back. On one machine here: one PostgreSQL (PG) holding
# portico_east and portico_west, east's control plane on :9080 and gateway on :8080, west's
# on :9081 and :8081. Both answer for one issuer (ISSUER, the global name clients use) and
# share the key that seals secrets. In two real regions, each peer URL is the other region's
# database, readable by a role that may read its log, over verified TLS
# (...?sslmode=verify-full&sslrootcert=west-db-ca.pem).
set -euo pipefail
export PORTICO_ADMIN_PASSWORD=${PORTICO_ADMIN_PASSWORD:-change-me-admin-1}
export PORTICO_SECRETS_KEY=${PORTICO_SECRETS_KEY:-$(openssl rand -hex 32)}
PG=${PG:-postgres://postgres@127.0.0.1:5432}
ISSUER=${ISSUER:-http://portico.example.test}
trap 'kill $(jobs -p) 2>/dev/null' EXIT

# East's database, made by a first start of its control plane; west's starts as a copy of it.
psql -q "$PG/postgres" -c 'CREATE DATABASE portico_east'
portico control-plane --database-url "$PG/portico_east" --api 127.0.0.1:9080 &
first=$!
until curl -sf -o /dev/null http://127.0.0.1:9080/readyz; do sleep 0.2; done
kill $first; wait $first || true
until psql -q "$PG/postgres" -c 'CREATE DATABASE portico_west TEMPLATE portico_east' 2>/dev/null; do sleep 0.2; done

# The two regions, each following the other.
portico control-plane --database-url "$PG/portico_east" --api 127.0.0.1:9080 --public-url "$ISSUER" \
  --region east --peer-database-url "$PG/portico_west" &
portico control-plane --database-url "$PG/portico_west" --api 127.0.0.1:9081 --public-url "$ISSUER" \
  --region west --peer-database-url "$PG/portico_east" &
until curl -sf -o /dev/null http://127.0.0.1:9080/readyz && curl -sf -o /dev/null http://127.0.0.1:9081/readyz; do sleep 0.2; done

# A gateway token made in east is west's too; each region's gateways follow their own
# control plane.
SESSION=$(curl -sf -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PORTICO_ADMIN_PASSWORD\"}" http://127.0.0.1:9080/api/v1/auth/login | jq -r .token)
export PORTICO_GATEWAY_TOKEN=$(curl -sf -H "authorization: Bearer $SESSION" -H 'content-type: application/json' \
  -d '{"description":"both regions"}' http://127.0.0.1:9080/api/v1/environments/default/gateway-tokens | jq -r .token)
sleep 1
portico gateway --control-plane http://127.0.0.1:9080 --environment default --cache-dir .portico-east \
  --listen 127.0.0.1:8080 --admin 127.0.0.1:9901 &
portico gateway --control-plane http://127.0.0.1:9081 --environment default --cache-dir .portico-west \
  --listen 127.0.0.1:8081 --admin 127.0.0.1:9902 &
wait
