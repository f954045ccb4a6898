-- Portico control plane, initial schema. The same SQL runs on SQLite and PostgreSQL:
-- ids are TEXT (UUIDs made by the application), integers and flags are BIGINT, times are
-- BIGINT milliseconds since the Unix epoch, structured values are JSON in TEXT.

CREATE TABLE settings (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE users (
    id TEXT PRIMARY KEY,
    username TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin', 'publisher', 'subscriber')),
    created_at BIGINT NOT NULL
);

CREATE TABLE sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL
);

CREATE TABLE tiers (
    name TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('subscription', 'application')),
    description TEXT NOT NULL DEFAULT '',
    -- NULL requests means unlimited.
    requests BIGINT,
    per_ms BIGINT,
    burst_requests BIGINT,
    burst_per_ms BIGINT,
    PRIMARY KEY (name, kind)
);

CREATE TABLE apis (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    context TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    documentation TEXT NOT NULL DEFAULT '',
    endpoints TEXT NOT NULL DEFAULT '[]',
    policies TEXT NOT NULL DEFAULT '[]',
    status TEXT NOT NULL CHECK (status IN ('CREATED', 'PUBLISHED', 'DEPRECATED', 'RETIRED', 'BLOCKED')),
    owner_id TEXT NOT NULL REFERENCES users (id),
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (name, version),
    UNIQUE (context, version)
);

CREATE TABLE operations (
    id TEXT PRIMARY KEY,
    api_id TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    method TEXT NOT NULL,
    path TEXT NOT NULL,
    policies TEXT NOT NULL DEFAULT '[]',
    UNIQUE (api_id, method, path)
);

CREATE TABLE revisions (
    id TEXT PRIMARY KEY,
    api_id TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    number BIGINT NOT NULL,
    -- The API, its operations, endpoints and policies as they were, as JSON.
    content TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (api_id, number)
);

CREATE TABLE environments (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL
);

CREATE TABLE deployments (
    api_id TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    environment TEXT NOT NULL REFERENCES environments (name) ON DELETE CASCADE,
    revision_id TEXT NOT NULL REFERENCES revisions (id),
    deployed_at BIGINT NOT NULL,
    PRIMARY KEY (api_id, environment)
);

CREATE TABLE applications (
    id TEXT PRIMARY KEY,
    owner_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    tier TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (owner_id, name)
);

CREATE TABLE subscriptions (
    id TEXT PRIMARY KEY,
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    api_id TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    tier TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ON_HOLD', 'ACTIVE', 'BLOCKED', 'REJECTED')),
    created_at BIGINT NOT NULL,
    UNIQUE (application_id, api_id)
);

CREATE TABLE oauth_clients (
    client_id TEXT PRIMARY KEY,
    application_id TEXT NOT NULL UNIQUE REFERENCES applications (id) ON DELETE CASCADE,
    -- Argon2id PHC string; the secret itself is shown once and never stored.
    secret_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE api_keys (
    id TEXT PRIMARY KEY,
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    -- HMAC-SHA256 of the key under the server's key-hash secret, hex.
    key_hash TEXT NOT NULL UNIQUE,
    -- The first characters, to let people tell their keys apart.
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);

CREATE TABLE signing_keys (
    kid TEXT PRIMARY KEY,
    alg TEXT NOT NULL CHECK (alg IN ('ES256', 'RS256')),
    private_pem TEXT NOT NULL,
    public_pem TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    -- 1 for the key that signs new tokens; older keys stay published until retired.
    active BIGINT NOT NULL DEFAULT 0,
    retired_at BIGINT
);

CREATE TABLE refresh_tokens (
    token_hash TEXT PRIMARY KEY,
    family_id TEXT NOT NULL,
    client_id TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    scope TEXT NOT NULL DEFAULT '',
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    revoked_at BIGINT
);
CREATE INDEX refresh_tokens_family ON refresh_tokens (family_id);

CREATE TABLE revoked_tokens (
    jti TEXT PRIMARY KEY,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT NOT NULL
);

INSERT INTO environments (name, description, created_at) VALUES ('default', 'The default gateway environment', 0);

INSERT INTO tiers (name, kind, description, requests, per_ms, burst_requests, burst_per_ms) VALUES
    ('Unlimited', 'subscription', 'No limit', NULL, NULL, NULL, NULL),
    ('Gold', 'subscription', '5000 requests per minute', 5000, 60000, 100, 1000),
    ('Silver', 'subscription', '2000 requests per minute', 2000, 60000, 50, 1000),
    ('Bronze', 'subscription', '1000 requests per minute', 1000, 60000, 20, 1000),
    ('Unlimited', 'application', 'No limit', NULL, NULL, NULL, NULL),
    ('10PerMin', 'application', '10 requests per minute', 10, 60000, NULL, NULL),
    ('50PerMin', 'application', '50 requests per minute', 50, 60000, NULL, NULL);
