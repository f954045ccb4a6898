-- The scopes APIs define: a name belongs to one API (so that no API can define, and
-- have granted, a scope another API's operations require). `position` keeps their order.
CREATE TABLE api_scopes (
    name TEXT PRIMARY KEY,
    api_id TEXT NOT NULL REFERENCES apis (id) ON DELETE CASCADE,
    description TEXT NOT NULL DEFAULT '',
    -- JSON list of the roles an application's owner needs to be granted it (any when empty).
    roles TEXT NOT NULL DEFAULT '[]',
    position INTEGER NOT NULL
);
CREATE INDEX api_scopes_api ON api_scopes (api_id);

-- The scopes each operation requires (JSON list of names).
ALTER TABLE operations ADD COLUMN scopes TEXT NOT NULL DEFAULT '[]';
