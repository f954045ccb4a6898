-- The policy registry, gateway fleets (tokens, registrations, acknowledgements), the
-- deployment history rollbacks read, and blocking conditions.

CREATE TABLE policy_modules (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    -- sha256 of the component, hex: how gateways ask for it and verify it.
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    -- A JSON Schema of the configuration, as JSON text; NULL when there is none.
    config_schema TEXT,
    component BYTEA NOT NULL,
    uploaded_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX policy_modules_digest ON policy_modules (digest);

CREATE TABLE gateway_tokens (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL REFERENCES environments (name) ON DELETE CASCADE,
    -- sha256 of the token, hex; the token is shown once.
    token_hash TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);

CREATE TABLE gateways (
    id TEXT PRIMARY KEY,
    environment TEXT NOT NULL,
    -- The snapshot version it serves, as it acknowledged it.
    running_version TEXT,
    -- The last version it refused, and why.
    refused_version TEXT,
    refused_reason TEXT,
    first_seen BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);

CREATE TABLE deployment_history (
    id TEXT PRIMARY KEY,
    api_id TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    environment TEXT NOT NULL,
    revision_id TEXT NOT NULL,
    deployed_at BIGINT NOT NULL,
    -- Orders deployments made in the same millisecond.
    seq BIGINT NOT NULL
);
CREATE INDEX deployment_history_api ON deployment_history (api_id, environment, seq);

CREATE TABLE blocking_conditions (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('ip', 'application', 'user', 'api')),
    value TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (kind, value)
);
