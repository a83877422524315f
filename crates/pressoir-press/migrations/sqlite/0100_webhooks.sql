-- Press webhooks (issue 7): configuration, the delivery outbox and the attempt log.
-- team = '' marks an administrator-level webhook that receives every team's events.
CREATE TABLE webhooks (
    name TEXT PRIMARY KEY,
    team TEXT NOT NULL,
    url TEXT NOT NULL,
    headers TEXT NOT NULL,
    secret TEXT,
    signing_secret TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    disabled_reason TEXT,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    failing_since INTEGER,
    last_success INTEGER,
    created INTEGER NOT NULL,
    modified INTEGER NOT NULL
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
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    event_id TEXT NOT NULL,
    webhook TEXT NOT NULL,
    team TEXT NOT NULL,
    event TEXT NOT NULL,
    lane TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_at INTEGER NOT NULL,
    last_status_code INTEGER,
    last_error TEXT,
    created INTEGER NOT NULL,
    modified INTEGER NOT NULL,
    sent_at INTEGER
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
    attempt INTEGER NOT NULL,
    ok INTEGER NOT NULL,
    status_code INTEGER,
    response_excerpt TEXT,
    duration_ms INTEGER NOT NULL,
    error TEXT,
    created INTEGER NOT NULL
);
CREATE INDEX webhook_attempts_webhook ON webhook_attempts(webhook, created);
CREATE INDEX webhook_attempts_created ON webhook_attempts(created);
