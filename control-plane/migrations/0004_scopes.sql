-- The scopes an API defines (JSON list of {name, description, roles}), and the scopes
-- each operation requires (JSON list of names).
ALTER TABLE apis ADD COLUMN scopes TEXT NOT NULL DEFAULT '[]';
ALTER TABLE operations ADD COLUMN scopes TEXT NOT NULL DEFAULT '[]';
