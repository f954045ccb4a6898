-- The APIs of its running snapshot a gateway could not load (JSON list of
-- {name, version, problems}), as it acknowledged them.
ALTER TABLE gateways ADD COLUMN failed_apis TEXT;
