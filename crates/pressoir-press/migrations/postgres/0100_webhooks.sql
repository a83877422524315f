-- Press webhooks (issue 7): configuration, the delivery outbox and the attempt log.
-- team = '' marks an administrator-level webhook that receives every team's events.
CREATE TABLE webhooks (
    name TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    url TEXT NOT NULL,
    headers TEXT NOT NULL,
    secret TEXT,
    signing_secret TEXT NOT NULL,
    enabled BIGINT NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    failing_since BIGINT,
    last_success BIGINT,
    created BIGINT NOT NULL,
    modified BIGINT NOT NULL
);
CREATE INDEX webhooks_team ON webhooks(team);
CREATE TABLE webhook_subscriptions (
    webhook TEXT NOT NULL REFERENCES webhooks(name) ON DELETE CASCADE,
    event TEXT NOT NULL,
    PRIMARY KEY (webhook, event)
);
CREATE INDEX webhook_subscriptions_event ON webhook_subscriptions(event, webhook);
-- One row per (event, webhook), written in the transaction of the change that caused the event.
CREATE TABLE webhook_deliveries (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    event_id TEXT NOT NULL,
    webhook TEXT NOT NULL,
    team TEXT NOT NULL,
    event TEXT NOT NULL,
    lane TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    last_status_code BIGINT,
    last_error TEXT,
    created BIGINT NOT NULL,
    modified BIGINT NOT NULL,
    sent_at BIGINT
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries(status, next_at);
CREATE INDEX webhook_deliveries_lane ON webhook_deliveries(webhook, lane, status, seq);
CREATE INDEX webhook_deliveries_modified ON webhook_deliveries(status, modified);
CREATE TABLE webhook_attempts (
    id TEXT PRIMARY KEY,
    webhook TEXT NOT NULL,
    delivery TEXT NOT NULL,
    event TEXT NOT NULL,
    event_id TEXT NOT NULL,
    attempt BIGINT NOT NULL,
    ok BIGINT NOT NULL,
    status_code BIGINT,
    response_excerpt TEXT,
    duration_ms BIGINT NOT NULL,
    error TEXT,
    created BIGINT NOT NULL
);
CREATE INDEX webhook_attempts_webhook ON webhook_attempts(webhook, created);
CREATE INDEX webhook_attempts_created ON webhook_attempts(created);
