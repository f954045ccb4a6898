-- Applications whose access tokens issued before `from_s` (Unix seconds) gateways refuse:
-- deleted, or changed so that what their tokens claim no longer holds. Kept until
-- `expires_at` (milliseconds), when every such token has expired anyway.
CREATE TABLE application_cutoffs (
    application_id TEXT PRIMARY KEY,
    from_s BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
