-- Press → billing (issue 6 §2): the durable outbox of Lago calls, written in the transaction of
-- the site change that causes them, drained by the billing worker. `key` orders the calls of
-- one subscription (site name) or customer (team); `id` is unique, so a usage sample for a
-- (site, period) already queued is never queued twice.
CREATE TABLE billing_outbox (
    id TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_at BIGINT NOT NULL,
    last_error TEXT,
    done BIGINT NOT NULL DEFAULT 0,
    created BIGINT NOT NULL,
    sent_at BIGINT
);
CREATE INDEX billing_outbox_due ON billing_outbox(done, next_at);
