-- The access token issued with each refresh token (its jti, and when it expires, in
-- milliseconds): revoking the family revokes them too.
ALTER TABLE refresh_tokens ADD COLUMN access_jti TEXT;
ALTER TABLE refresh_tokens ADD COLUMN access_expires_at BIGINT;
