#!/usr/bin/env bash
# WSO2 pattern 3: the control plane, the Traffic Manager's store and two gateways, each layer
# scaled on its own. The gateways are fed by the control plane as in pattern 2 and keep every
# rate limit and quota in the Redis the control plane names for their environment, so that the fleet admits a tier's limit once, not once per
# gateway, and a day's or a month's quota outlives their restarts.
# Gateways :8080/:8081 (admin :9901/:9902), control plane :9080, Redis :6380 (or
# PORTICO_REDIS_URL, a Redis of your own).
set -euo pipefail
export PORTICO_ADMIN_PASSWORD=${PORTICO_ADMIN_PASSWORD:-change-me-admin-1}
CP=http://127.0.0.1:9080
trap 'kill $(jobs -p) 2>/dev/null' EXIT

# The Traffic Manager's store: Redis, with an append-only file so that quotas outlive it too.
if [ -z "${PORTICO_REDIS_URL:-}" ]; then
  mkdir -p .portico-redis
  redis-server --port 6380 --bind 127.0.0.1 --dir "$PWD/.portico-redis" --appendonly yes --save "" &
  PORTICO_REDIS_URL=redis://127.0.0.1:6380/
  until redis-cli -p 6380 ping >/dev/null 2>&1; do sleep 0.2; done
fi

portico control-plane --data-dir .portico-cp --api 127.0.0.1:9080 &
until curl -sf -o /dev/null "$CP/api/v1/openapi.json"; do sleep 0.2; done

# A gateway token for the `default` environment (shown once).
SESSION=$(curl -sf -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PORTICO_ADMIN_PASSWORD\"}" "$CP/api/v1/auth/login" | jq -r .token)
export PORTICO_GATEWAY_TOKEN=$(curl -sf -H "authorization: Bearer $SESSION" -H 'content-type: application/json' \
  -d '{"description":"pattern 3 gateways"}' "$CP/api/v1/environments/default/gateway-tokens" | jq -r .token)

# The environment's counters live in Redis: its gateways get it with their snapshot (while
# Redis is away, each of the two admits half of a limit).
curl -sf -X PUT -H "authorization: Bearer $SESSION" -H 'content-type: application/json' \
  -d "{\"redis\":{\"url\":\"$PORTICO_REDIS_URL\",\"timeout\":\"20ms\",\"mode\":\"leased\",\"fleet_size\":2}}" \
  "$CP/api/v1/environments/default/counters" >/dev/null

# Each gateway's own settings: where it listens.
for n in 1 2; do
  cat > ".portico-gw-$n.yaml" <<YAML
listeners: [{address: "127.0.0.1:808$((n - 1))"}]
admin: {address: "127.0.0.1:990$n"}
YAML
  portico gateway --control-plane "$CP" --environment default --cache-dir ".portico-gw-$n" --settings ".portico-gw-$n.yaml" &
done
wait
