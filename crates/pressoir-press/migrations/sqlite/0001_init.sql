CREATE TABLE users (
    name TEXT PRIMARY KEY,
    full_name TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    is_admin INTEGER NOT NULL DEFAULT 0,
    enabled INTEGER NOT NULL DEFAULT 1,
    default_team TEXT,
    created INTEGER NOT NULL
);
CREATE TABLE teams (
    name TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    owner TEXT NOT NULL,
    enabled INTEGER NOT NULL DEFAULT 1,
    created INTEGER NOT NULL
);
CREATE TABLE team_members (
    team TEXT NOT NULL REFERENCES teams(name),
    user_name TEXT NOT NULL REFERENCES users(name),
    PRIMARY KEY (team, user_name)
);
CREATE TABLE sessions (
    sid_hash TEXT PRIMARY KEY,
    user_name TEXT NOT NULL REFERENCES users(name),
    csrf_token TEXT NOT NULL,
    expires INTEGER NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE api_keys (
    api_key TEXT PRIMARY KEY,
    user_name TEXT NOT NULL UNIQUE REFERENCES users(name),
    secret_hash TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE TABLE plans (
    name TEXT PRIMARY KEY,
    price_cents INTEGER NOT NULL,
    currency TEXT NOT NULL,
    cpu_time_per_day INTEGER NOT NULL,
    max_database_mb INTEGER NOT NULL,
    max_storage_mb INTEGER NOT NULL,
    billing_code TEXT NOT NULL,
    is_trial INTEGER NOT NULL DEFAULT 0,
    enabled INTEGER NOT NULL DEFAULT 1,
    idx INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE servers (
    name TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    team TEXT NOT NULL REFERENCES teams(name),
    status TEXT NOT NULL,
    agent_url TEXT NOT NULL,
    agent_password TEXT NOT NULL,
    use_for_new_sites INTEGER NOT NULL DEFAULT 1,
    created INTEGER NOT NULL
);
CREATE TABLE benches (
    server TEXT NOT NULL REFERENCES servers(name),
    name TEXT NOT NULL,
    apps TEXT NOT NULL,
    status TEXT NOT NULL,
    created INTEGER NOT NULL,
    PRIMARY KEY (server, name)
);
CREATE TABLE sites (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    subdomain TEXT NOT NULL,
    domain TEXT NOT NULL,
    team TEXT NOT NULL REFERENCES teams(name),
    plan TEXT NOT NULL REFERENCES plans(name),
    server TEXT NOT NULL REFERENCES servers(name),
    bench TEXT NOT NULL,
    status TEXT NOT NULL,
    apps TEXT NOT NULL,
    config TEXT NOT NULL,
    created INTEGER NOT NULL,
    modified INTEGER NOT NULL
);
CREATE UNIQUE INDEX sites_live_name ON sites(name) WHERE status <> 'Archived';
CREATE INDEX sites_team ON sites(team, created);
CREATE TABLE jobs (
    name TEXT PRIMARY KEY,
    server TEXT NOT NULL REFERENCES servers(name),
    site_id TEXT REFERENCES sites(id),
    site_name TEXT,
    team TEXT NOT NULL,
    job_type TEXT NOT NULL,
    request_data TEXT NOT NULL,
    status TEXT NOT NULL,
    agent_id TEXT,
    steps TEXT NOT NULL,
    result TEXT,
    error TEXT,
    retry_count INTEGER NOT NULL DEFAULT 0,
    next_retry_at INTEGER NOT NULL,
    polled_at INTEGER NOT NULL DEFAULT 0,
    created INTEGER NOT NULL,
    started INTEGER,
    ended INTEGER,
    duration_ms INTEGER,
    modified INTEGER NOT NULL
);
CREATE INDEX jobs_due ON jobs(server, status, next_retry_at);
CREATE INDEX jobs_site ON jobs(site_id, created);
-- The outbox of site events, written in the same transaction as the change (webhooks read it).
CREATE TABLE site_events (
    id TEXT PRIMARY KEY,
    event TEXT NOT NULL,
    team TEXT NOT NULL,
    site_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX site_events_pending ON site_events(delivered, created);
