-- Where an environment's rate counters live, as the gateway contract's `counters` JSON
-- (a Redis its gateways share); NULL means in each gateway's process.
ALTER TABLE environments ADD COLUMN counters TEXT;
