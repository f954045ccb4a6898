-- Where an environment's gateways are reached by API consumers (`https://gw.example.com`):
-- what the developer portal shows and its try-it panel calls. NULL: not said.
ALTER TABLE environments ADD COLUMN gateway_url TEXT;
