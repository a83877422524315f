//! A bare server for this crate's own tests and benchmark, which need it as a separate
//! process (to kill it mid-upload). Users run `pressoir objects serve` instead.
//!
//! Usage: `pressoir-objects-server --data-dir DIR --access-key AK --secret-key SK [--listen ADDR] [--no-fsync] [--keys-file F]`
//! Prints `listening on <addr>` once it accepts connections.

use pressoir_core::{Secret, Shutdown};
use std::io::Write;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let need = |name: &str| {
        arg(&args, name).unwrap_or_else(|| {
            eprintln!("missing {name}");
            std::process::exit(2)
        })
    };
    let data_dir = need("--data-dir");
    let access = need("--access-key");
    let secret = need("--secret-key");
    let listen = arg(&args, "--listen").unwrap_or_else(|| "127.0.0.1:0".into());
    let mut config = pressoir_objects::Config::new(data_dir, access, Secret::new(secret));
    config.fsync = !args.iter().any(|a| a == "--no-fsync");
    if let Some(path) = arg(&args, "--keys-file") {
        let bytes = std::fs::read(&path).expect("read the keys file");
        config.keys.extend(
            pressoir_objects::AccessKey::list_from_json(&bytes).expect("a valid keys file"),
        );
    }
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
    println!(
        "listening on {}",
        listener.local_addr().expect("local addr")
    );
    let _ = std::io::stdout().flush();
    if let Err(e) = pressoir_objects::run(config, listener, Shutdown::on_signals()).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
