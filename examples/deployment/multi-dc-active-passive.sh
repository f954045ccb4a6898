#!/usr/bin/env bash
# Multi-datacenter, active-passive: region A runs the control plane (over TLS), region B
# runs gateways fed from A across the regions' link, with its own Redis for rate counters.
# With A unreachable, B keeps serving from memory and from its cache (also across a gateway
# restart) and keeps counting in its Redis; when the link is back, B converges on what A
# published meanwhile. On one machine here: A on :9443, B's gateway on :8080 (admin :9901),
# B's Redis on :6380. In two real regions, A_URL is A's public address and B trusts A's CA.
set -euo pipefail
export PORTICO_ADMIN_PASSWORD=${PORTICO_ADMIN_PASSWORD:-change-me-admin-1}
A_URL=${A_URL:-https://127.0.0.1:9443}
trap 'kill $(jobs -p) 2>/dev/null' EXIT

# Region A: the control plane, with a certificate its gateways trust.
[ -f a.pem ] || openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 365 \
  -subj /CN=region-a -addext subjectAltName=IP:127.0.0.1,DNS:localhost -addext basicConstraints=critical,CA:FALSE -keyout a.key -out a.pem 2>/dev/null
portico control-plane --data-dir .portico-a --api 127.0.0.1:9443 --tls-cert a.pem --tls-key a.key &
until curl -sf --cacert a.pem -o /dev/null "$A_URL/readyz"; do sleep 0.2; done

# Region B's Redis, and the environment's counters there.
redis-server --port 6380 --save '' --appendonly no >/dev/null &
SESSION=$(curl -sf --cacert a.pem -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PORTICO_ADMIN_PASSWORD\"}" "$A_URL/api/v1/auth/login" | jq -r .token)
curl -sf --cacert a.pem -X PUT -H "authorization: Bearer $SESSION" -H 'content-type: application/json' \
  -d '{"redis": {"url": "redis://127.0.0.1:6380"}}' "$A_URL/api/v1/environments/default/counters" >/dev/null
export PORTICO_GATEWAY_TOKEN=$(curl -sf --cacert a.pem -H "authorization: Bearer $SESSION" -H 'content-type: application/json' \
  -d '{"description":"region B"}' "$A_URL/api/v1/environments/default/gateway-tokens" | jq -r .token)

# Region B: a gateway (start more the same way), its cache on local disk.
portico gateway --control-plane "$A_URL" --control-plane-ca a.pem --environment default \
  --cache-dir .portico-b --listen 127.0.0.1:8080 --admin 127.0.0.1:9901 &
wait
