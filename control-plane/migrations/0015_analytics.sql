-- Usage analytics: what gateways report over the fleet link, per minute, API, operation,
-- application and status class, with a latency histogram; and the reports taken, so that
-- one sent again is not counted twice.

CREATE TABLE analytics_minutes (
    environment TEXT NOT NULL,
    -- The minute's first second (Unix time).
    minute BIGINT NOT NULL,
    api_name TEXT NOT NULL,
    api_version TEXT NOT NULL,
    -- `METHOD /template`.
    operation TEXT NOT NULL,
    -- '' for requests without an application.
    application_id TEXT NOT NULL,
    -- 1 to 5: the status's first digit.
    status_class BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    -- Sum of the latencies, in microseconds.
    latency_us BIGINT NOT NULL,
    -- Requests by latency bucket (the bounds of LATENCY_BOUNDS_MS in
    -- gateway/src/contract/fleet.rs), then slower than the largest.
    latency_le_1ms BIGINT NOT NULL,
    latency_le_5ms BIGINT NOT NULL,
    latency_le_10ms BIGINT NOT NULL,
    latency_le_25ms BIGINT NOT NULL,
    latency_le_50ms BIGINT NOT NULL,
    latency_le_100ms BIGINT NOT NULL,
    latency_le_250ms BIGINT NOT NULL,
    latency_le_500ms BIGINT NOT NULL,
    latency_le_1000ms BIGINT NOT NULL,
    latency_le_2500ms BIGINT NOT NULL,
    latency_le_5000ms BIGINT NOT NULL,
    latency_le_10000ms BIGINT NOT NULL,
    latency_over_10000ms BIGINT NOT NULL,
    PRIMARY KEY (environment, minute, api_name, api_version, operation, application_id, status_class)
);
CREATE INDEX analytics_minutes_api ON analytics_minutes (api_name, api_version, minute);
CREATE INDEX analytics_minutes_application ON analytics_minutes (application_id, minute);
CREATE INDEX analytics_minutes_minute ON analytics_minutes (minute);

CREATE TABLE analytics_batches (
    gateway_id TEXT NOT NULL,
    batch TEXT NOT NULL,
    environment TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    requests BIGINT NOT NULL,
    -- Requests the gateway could not tally or keep, reported with this batch.
    dropped BIGINT NOT NULL,
    PRIMARY KEY (gateway_id, batch)
);
CREATE INDEX analytics_batches_received ON analytics_batches (received_at);
