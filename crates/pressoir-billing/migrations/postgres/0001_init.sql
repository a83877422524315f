CREATE TABLE organization (
    id BIGINT PRIMARY KEY,
    lago_id TEXT NOT NULL,
    hmac_key TEXT NOT NULL,
    rsa_private_pem TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE customers (
    lago_id TEXT PRIMARY KEY,
    sequential_id BIGINT NOT NULL,
    external_id TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX customers_external_id ON customers (external_id) WHERE deleted_at IS NULL;

CREATE TABLE billable_metrics (
    lago_id TEXT PRIMARY KEY,
    code TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX billable_metrics_code ON billable_metrics (code) WHERE deleted_at IS NULL;

CREATE TABLE plans (
    lago_id TEXT PRIMARY KEY,
    code TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    deleted_at BIGINT
);
CREATE UNIQUE INDEX plans_code ON plans (code) WHERE deleted_at IS NULL;

CREATE TABLE subscriptions (
    lago_id TEXT PRIMARY KEY,
    external_id TEXT NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers (lago_id),
    plan_id TEXT NOT NULL REFERENCES plans (lago_id),
    status TEXT NOT NULL,
    billing_time TEXT NOT NULL,
    name TEXT,
    subscription_at BIGINT NOT NULL,
    started_at BIGINT,
    ending_at BIGINT,
    terminated_at BIGINT,
    canceled_at BIGINT,
    previous_id TEXT,
    billed_until BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX subscriptions_external_id ON subscriptions (external_id, status);
CREATE INDEX subscriptions_customer ON subscriptions (customer_id);
CREATE INDEX subscriptions_status ON subscriptions (status);

CREATE TABLE events (
    id BIGSERIAL PRIMARY KEY,
    lago_id TEXT NOT NULL,
    transaction_id TEXT NOT NULL,
    external_subscription_id TEXT NOT NULL,
    code TEXT NOT NULL,
    timestamp BIGINT NOT NULL,
    properties TEXT NOT NULL,
    value BIGINT,
    value_text TEXT,
    precise_total_amount_cents TEXT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX events_transaction ON events (external_subscription_id, transaction_id);
CREATE INDEX events_usage ON events (external_subscription_id, code, timestamp);
CREATE INDEX events_transaction_id ON events (transaction_id);

CREATE TABLE usage_buckets (
    external_subscription_id TEXT NOT NULL,
    code TEXT NOT NULL,
    hour BIGINT NOT NULL,
    shard BIGINT NOT NULL,
    events_count BIGINT NOT NULL,
    value_count BIGINT NOT NULL,
    value_sum BIGINT NOT NULL,
    value_max BIGINT,
    latest_ts BIGINT,
    latest_value BIGINT,
    PRIMARY KEY (external_subscription_id, code, hour, shard)
);

CREATE TABLE invoices (
    lago_id TEXT PRIMARY KEY,
    sequential_id BIGINT NOT NULL,
    customer_id TEXT NOT NULL REFERENCES customers (lago_id),
    subscription_id TEXT,
    period_key TEXT,
    status TEXT NOT NULL,
    payment_status TEXT NOT NULL,
    issuing_date TEXT NOT NULL,
    total_amount_cents BIGINT NOT NULL,
    currency TEXT NOT NULL,
    data TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX invoices_period ON invoices (subscription_id, period_key);
CREATE INDEX invoices_customer ON invoices (customer_id);

CREATE TABLE webhook_endpoints (
    lago_id TEXT PRIMARY KEY,
    webhook_url TEXT NOT NULL UNIQUE,
    signature_algo TEXT NOT NULL,
    name TEXT,
    event_types TEXT,
    created_at BIGINT NOT NULL
);

CREATE TABLE webhooks (
    lago_id TEXT PRIMARY KEY,
    endpoint_id TEXT NOT NULL,
    webhook_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    next_attempt_at BIGINT NOT NULL,
    last_http_status BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX webhooks_due ON webhooks (status, next_attempt_at);
