//! Integration tests: the real agent on 127.0.0.1:0, driven over HTTP as a client would.

mod api;
mod backups;
mod common;
mod jobs;
mod push;
mod restart;
mod secrets;
mod usage;
