CREATE UNIQUE INDEX subscriptions_one_active ON subscriptions (external_id) WHERE status = 'active';
