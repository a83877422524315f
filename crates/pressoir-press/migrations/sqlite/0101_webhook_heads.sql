-- The head of each pending (webhook, lane) is found by one ordered scan of this index.
CREATE INDEX webhook_deliveries_heads ON webhook_deliveries(status, webhook, lane, seq);
