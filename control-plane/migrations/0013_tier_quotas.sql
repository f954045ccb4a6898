-- A tier's quota per calendar day or month, which starts over at midnight in its time zone
-- (as WSO2's tiers do), beside its rate and burst limits.
ALTER TABLE tiers ADD COLUMN quota_requests BIGINT;
ALTER TABLE tiers ADD COLUMN quota_period TEXT CHECK (quota_period IN ('day', 'month'));
ALTER TABLE tiers ADD COLUMN time_zone TEXT NOT NULL DEFAULT 'UTC';
