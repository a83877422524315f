//! Benchmark support shared by Pressoir's `cargo bench` targets: [`load::run`], an HTTP/1.1
//! keep-alive load generator over N connections; [`hello::spawn`], a plain hyper hello-world
//! server to measure the machine's baseline in the same run; [`stats`] percentiles; and
//! [`press::api_key`], the API key a Press benchmark authenticates with.
//!
//! It is for benchmarks only: it must not be a dependency of any service crate, and it must
//! only ever send traffic to the address it is given (127.0.0.1 in every bench).

pub mod hello;
pub mod load;
pub mod press;
pub mod stats;

pub use load::{Report, Spec, Stop};
pub use stats::Summary;
