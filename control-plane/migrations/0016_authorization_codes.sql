-- End users (the authorization code grant with PKCE): the redirect URIs an application's
-- OAuth2 client registered (a JSON array, matched exactly), the codes issued (hashed,
-- single use, short-lived), and the end user of each refresh token.
ALTER TABLE oauth_clients ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '[]';
ALTER TABLE refresh_tokens ADD COLUMN user_id TEXT REFERENCES users (id) ON DELETE CASCADE;

CREATE TABLE authorization_codes (
    -- SHA-256 of the code, hex; the code itself is only ever in the redirect.
    code_hash TEXT PRIMARY KEY,
    client_id TEXT NOT NULL REFERENCES oauth_clients (client_id) ON DELETE CASCADE,
    -- The end user who allowed it.
    user_id TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- Exactly as the authorization request gave it: the token request must repeat it.
    redirect_uri TEXT NOT NULL,
    scope TEXT NOT NULL,
    -- PKCE (RFC 7636), S256 only: BASE64URL(SHA256(code_verifier)).
    code_challenge TEXT NOT NULL,
    -- OpenID Connect: copied into the ID token.
    nonce TEXT,
    -- Seconds since the Unix epoch: the ID token's `auth_time`.
    auth_time BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at BIGINT,
    -- The refresh-token family its exchange began: revoked if the code comes again.
    family_id TEXT
);
CREATE INDEX authorization_codes_expiry ON authorization_codes (expires_at);
