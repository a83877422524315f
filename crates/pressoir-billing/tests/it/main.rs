//! Integration tests: the real server on 127.0.0.1:0, talked to over HTTP as clients do, on
//! SQLite always and on PostgreSQL when `PRESSOIR_TEST_POSTGRES_URL` is set.

mod api;
mod client;
mod common;
mod invoices;
mod python;
mod replicas;
mod storage;
mod usage;
mod webhooks;
