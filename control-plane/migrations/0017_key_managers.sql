-- Outside OpenID providers acting as key managers (WSO2's third-party key managers): the
-- gateway contract's issuer settings plus the environments that accept its tokens, as
-- sealed JSON (they hold the gateways' introspection secret).
CREATE TABLE key_managers (
    name TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- OAuth2 clients registered at an outside key manager, each the client of one application,
-- whose subscriptions and tier its tokens then carry at the gateways.
CREATE TABLE external_clients (
    key_manager TEXT NOT NULL REFERENCES key_managers (name) ON DELETE CASCADE,
    client_id TEXT NOT NULL,
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (key_manager, client_id)
);
CREATE INDEX external_clients_application ON external_clients (application_id);
