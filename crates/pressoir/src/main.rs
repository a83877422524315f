//! The `pressoir` binary: parses the command line, loads each service's config and calls its
//! `run`. It holds no service logic.

use clap::{Parser, Subcommand};

mod objects;

#[derive(Parser)]
#[command(name = "pressoir", version, about = "A self-hosted cloud for Frappe sites")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The S3 object storage alone.
    Objects(objects::ObjectsArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pressoir_core::serve::init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Objects(args) => objects::run(args).await,
    }
}
