-- PEM CA certificates an API's https:// endpoints are verified against (instead of the
-- gateways' system roots); none when NULL.
ALTER TABLE apis ADD COLUMN endpoint_ca TEXT;
