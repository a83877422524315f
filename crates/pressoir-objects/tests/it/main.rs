//! Integration tests: the real server on 127.0.0.1:0, driven by real S3 clients
//! (boto3 and the aws CLI from the test venv, and the object_store crate the agent uses).

mod bad_input;
mod clients;
mod common;
mod crash;
mod expiry;
mod rust_client;
mod sig;
