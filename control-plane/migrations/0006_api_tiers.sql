-- The subscription tiers an API offers (JSON list of names; the most restrictive
-- subscription tier when empty).
ALTER TABLE apis ADD COLUMN tiers TEXT NOT NULL DEFAULT '[]';
