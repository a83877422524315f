CREATE INDEX sites_name ON sites(name, created);
CREATE INDEX jobs_status_due ON jobs(status, next_retry_at);
