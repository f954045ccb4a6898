#!/usr/bin/env bash
# WSO2 pattern 5: a company's own OpenID provider as the key manager. A control plane and a
# gateway; the provider (ISSUER, e.g. Keycloak, Okta, Auth0, Entra ID, panva's oidc-provider)
# issues the tokens. The gateway fetches its keys from ISSUER/.well-known/openid-configuration
# and introspects its opaque tokens with the client GATEWAY_CLIENT_ID/SECRET registered there
# for Portico. An application then maps the client id the provider gave it (proving it holds
# it with its secret), so its subscriptions and tier apply to that client's tokens.
# Control plane :9080, gateway :8080 (admin :9901).
set -euo pipefail
export PORTICO_ADMIN_PASSWORD=${PORTICO_ADMIN_PASSWORD:-change-me-admin-1}
ISSUER=${ISSUER:-https://idp.example.com/realms/shop}
AUDIENCE=${AUDIENCE:-https://api.example.com}
GATEWAY_CLIENT_ID=${GATEWAY_CLIENT_ID:-portico-gateway}
GATEWAY_CLIENT_SECRET=${GATEWAY_CLIENT_SECRET:?the secret of the client registered at the provider for the gateways}
CP=http://127.0.0.1:9080
trap 'kill $(jobs -p) 2>/dev/null' EXIT

portico control-plane --data-dir .portico-cp --api 127.0.0.1:9080 &
until curl -sf -o /dev/null "$CP/readyz"; do sleep 0.2; done
SESSION=$(curl -sf -H 'content-type: application/json' \
  -d "{\"username\":\"admin\",\"password\":\"$PORTICO_ADMIN_PASSWORD\"}" "$CP/api/v1/auth/login" | jq -r .token)

# The provider as the key manager of `default` (its secret is kept sealed, shown as ***).
jq -n --arg issuer "$ISSUER" --arg aud "$AUDIENCE" --arg id "$GATEWAY_CLIENT_ID" --arg secret "$GATEWAY_CLIENT_SECRET" \
  '{issuer: $issuer, environments: ["default"], audiences: [$aud],
    discovery: {introspection: {client_id: $id, client_secret: $secret, cache_ttl: "30s"}}}' |
  curl -sf -X PUT -H "authorization: Bearer $SESSION" -H 'content-type: application/json' -d @- "$CP/api/v1/key-managers/corp"
echo

# A gateway token for the `default` environment (shown once).
export PORTICO_GATEWAY_TOKEN=$(curl -sf -H "authorization: Bearer $SESSION" -H 'content-type: application/json' \
  -d '{"description":"pattern 5 gateway"}' "$CP/api/v1/environments/default/gateway-tokens" | jq -r .token)
portico gateway --control-plane "$CP" --environment default --cache-dir .portico-gw --listen 127.0.0.1:8080 --admin 127.0.0.1:9901 &

# Then, for each application (its owner, in the developer portal's API):
#   curl -X PUT -H "authorization: Bearer $SESSION" -H 'content-type: application/json' \
#     -d '{"client_id":"<id at the provider>","client_secret":"<its secret>"}' \
#     "$CP/api/v1/applications/<application id>/external-clients/corp"
wait
