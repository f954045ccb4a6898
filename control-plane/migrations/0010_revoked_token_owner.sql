-- The application a revoked token was issued to: an application's revocations are bounded
-- (past the bound they are folded into a cut-off, see keymanager::access_token).
ALTER TABLE revoked_tokens ADD COLUMN application_id TEXT;
CREATE INDEX revoked_tokens_application ON revoked_tokens (application_id);
