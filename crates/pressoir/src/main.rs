//! The `pressoir` binary: parses the command line, loads each service's config and calls its
//! `run`. It holds no service logic.

use clap::{Parser, Subcommand};

mod agent;
mod billing;
mod identity;
mod objects;
mod oidc;
mod press;
mod up;
mod webhook;

#[derive(Parser)]
#[command(
    name = "pressoir",
    version,
    about = "A self-hosted cloud for Frappe sites"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The agent alone (one per server): the Agent API and its jobs.
    Agent(agent::AgentArgs),
    /// The billing service (Lago API v1) alone.
    Billing(billing::BillingArgs),
    /// The identity service (Keycloak OpenID Connect) alone, and its admin commands.
    Identity(identity::IdentityArgs),
    /// The S3 object storage alone.
    Objects(objects::ObjectsArgs),
    /// Press, the control plane, alone (against remote agents), and its admin commands.
    Press(press::PressArgs),
    /// The whole cloud on one machine: Press, the embedded agent, and the gateway.
    Up(up::UpArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    pressoir_core::serve::init_tracing();
    let cli = Cli::parse();
    match cli.command {
        Command::Agent(args) => agent::run(args).await,
        Command::Billing(args) => billing::run(args).await,
        Command::Identity(args) => identity::run(args).await,
        Command::Objects(args) => objects::run(args).await,
        Command::Press(args) => press::run(args).await,
        Command::Up(args) => up::run(args).await,
    }
}
