-- Client certificates applications registered: a client that presents one over mutual TLS
-- is that application to key-auth. Gateways receive the sha256 of the DER only.
CREATE TABLE client_certificates (
    id TEXT PRIMARY KEY,
    application_id TEXT NOT NULL REFERENCES applications (id) ON DELETE CASCADE,
    -- Lower-case hex sha256 of the DER: what gateways match a presented certificate by.
    sha256 TEXT NOT NULL UNIQUE,
    subject TEXT NOT NULL,
    -- Validity, milliseconds since the Unix epoch.
    not_before BIGINT NOT NULL,
    not_after BIGINT NOT NULL,
    certificate TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX client_certificates_application ON client_certificates (application_id);
