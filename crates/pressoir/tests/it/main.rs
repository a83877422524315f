//! The `pressoir` binary's tests: it runs the built binary as a user would.

mod services;
mod up;
