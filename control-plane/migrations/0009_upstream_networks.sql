-- The networks an environment's upstreams may be in, as the gateway contract's
-- `upstream_networks` JSON; NULL means the defaults (loopback, link-local and cloud
-- metadata addresses denied).
ALTER TABLE environments ADD COLUMN upstream_networks TEXT;
