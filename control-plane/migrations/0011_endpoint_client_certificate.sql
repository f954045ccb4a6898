-- The client certificate (PEM) an API's gateways present to its https:// endpoints, and
-- its private key sealed with the operator's key; a revision keeps the key it was made with.
ALTER TABLE apis ADD COLUMN endpoint_client_certificate TEXT;
ALTER TABLE apis ADD COLUMN endpoint_client_key TEXT;
ALTER TABLE revisions ADD COLUMN endpoint_client_key TEXT;
