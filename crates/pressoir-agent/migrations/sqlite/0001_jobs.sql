CREATE TABLE jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    agent_job_id TEXT UNIQUE,
    job_type TEXT NOT NULL,
    site_key TEXT,
    status TEXT NOT NULL,
    data TEXT NOT NULL,
    secrets TEXT,
    result TEXT,
    error TEXT,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    version INTEGER NOT NULL DEFAULT 1,
    pushed_version INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX jobs_status ON jobs (status, id);
CREATE INDEX jobs_unpushed ON jobs (id) WHERE version > pushed_version;

CREATE TABLE steps (
    job_id INTEGER NOT NULL REFERENCES jobs (id),
    idx INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at INTEGER,
    ended_at INTEGER,
    output TEXT,
    PRIMARY KEY (job_id, idx)
);
