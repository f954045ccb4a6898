-- Expired sessions are deleted every hour (`expiry.rs`): by their expiry, without a scan.
CREATE INDEX sessions_expiry ON sessions (expires_at);
