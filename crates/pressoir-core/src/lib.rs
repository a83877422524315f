//! Plumbing shared by every Pressoir service: serving on a given listener with graceful
//! shutdown, request ids and tracing, per-credential rate limits, secrets and the
//! credentials file, database connections for SQLite and PostgreSQL, and clock helpers.
//!
//! It knows no service's domain and no wire protocol's error body: each service passes in
//! how its own protocol answers (for example the body of a 429).

pub mod clock;
pub mod db;
pub mod gateway;
pub mod ratelimit;
pub mod secret;
pub mod serve;

pub use ratelimit::{RateLimiter, RateSpec};
pub use secret::{CredentialStore, Secret, TokenHash};
pub use serve::{Shutdown, serve};
