//! Press's integration tests: a real Press and a real agent on 127.0.0.1:0, driven over HTTP,
//! on SQLite and (when `PRESSOIR_TEST_POSTGRES_URL` is set) on PostgreSQL.

mod auth;
mod backups;
mod billing;
mod common;
mod limits;
mod resilience;
mod servers;
mod sites;
mod teams;
mod webhooks;
