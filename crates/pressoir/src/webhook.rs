//! `pressoir press webhook ...`: the Administrator's webhooks (Press Settings > Webhooks), for
//! all teams by default or for one with `--team`, on Press's store (Press running or not).
//! Secrets never go on the command line: the optional `X-Webhook-Secret` comes from
//! PRESSOIR_WEBHOOK_SECRET (or its _FILE); the signing secret is printed once, by `add`.

use pressoir_press::store::Store;
use pressoir_press::webhooks::api::{self, Change, GLOBAL, NewWebhook};
use pressoir_press::webhooks::{EVENTS, WebhookConfig, store as wstore};
use serde_json::{Map, Value};

#[derive(clap::Subcommand, Debug)]
pub enum WebhookCommand {
    /// Adds a webhook (a validation ping must get a 2xx); prints its name and signing secret.
    Add {
        #[arg(long)]
        url: String,
        /// An event to send (repeat for several); see `pressoir press webhook events`.
        #[arg(long = "event", required = true)]
        events: Vec<String>,
        /// A header sent as given, `Name=value` (repeatable).
        #[arg(long = "header")]
        headers: Vec<String>,
        /// One team's webhook instead of one for all teams.
        #[arg(long)]
        team: Option<String>,
        /// Allow loopback, private and link-local targets (local development).
        #[arg(long, env = "PRESSOIR_WEBHOOKS_ALLOW_PRIVATE", value_parser = clap::builder::FalseyValueParser::new())]
        webhooks_allow_private: bool,
    },
    /// Lists webhooks (secrets are never shown).
    List {
        #[arg(long)]
        team: Option<String>,
    },
    /// Deletes a webhook with its pending deliveries and log.
    Delete { name: String },
    /// Shows a webhook's latest attempts.
    Attempts {
        name: String,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// Enables a webhook again (after a fresh 2xx ping); its kept deliveries resume.
    Enable {
        name: String,
        #[arg(long, env = "PRESSOIR_WEBHOOKS_ALLOW_PRIVATE", value_parser = clap::builder::FalseyValueParser::new())]
        webhooks_allow_private: bool,
    },
    /// Disables a webhook; its deliveries wait.
    Disable { name: String },
    /// Lists the events a webhook can subscribe to.
    Events,
}

fn optional_env(var: &str) -> anyhow::Result<Option<String>> {
    Ok(pressoir_core::secret::from_env(var)?.map(|(v, _)| v.expose().to_string()))
}

async fn find(store: &Store, name: &str) -> anyhow::Result<wstore::Webhook> {
    wstore::get(&store.db, name)
        .await?
        .ok_or_else(|| anyhow::anyhow!("webhook {name} not found"))
}

fn print_list(v: &Value) {
    for w in v.as_array().into_iter().flatten() {
        println!(
            "{}\t{}\t{}\tenabled={}\tevents={}\tpending={} sent={} failed={}{}",
            w["name"].as_str().unwrap_or(""),
            w["team"].as_str().unwrap_or("(all teams)"),
            w["url"].as_str().unwrap_or(""),
            w["enabled"],
            w["events"]
                .as_array()
                .map(|e| e
                    .iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(","))
                .unwrap_or_default(),
            w["pending"],
            w["sent"],
            w["failed"],
            w["disabled_reason"]
                .as_str()
                .map(|r| format!("\t({r})"))
                .unwrap_or_default(),
        );
    }
}

pub async fn run(store: Store, command: WebhookCommand) -> anyhow::Result<()> {
    match command {
        WebhookCommand::Add {
            url,
            events,
            headers,
            team,
            webhooks_allow_private,
        } => {
            let mut h = Map::new();
            for kv in headers {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--header takes Name=value"))?;
                h.insert(k.trim().to_string(), Value::String(v.to_string()));
            }
            let cfg = WebhookConfig {
                allow_private: webhooks_allow_private,
                ..WebhookConfig::default()
            };
            let team = team.unwrap_or_else(|| GLOBAL.to_string());
            if team != GLOBAL && store.team(&team).await?.is_none() {
                anyhow::bail!("team {team} not found");
            }
            let new = NewWebhook {
                url,
                events,
                headers: h,
                secret: optional_env("PRESSOIR_WEBHOOK_SECRET")?,
            };
            let w = api::add(&store, &cfg, &team, new).await?;
            println!("webhook {} added", w["name"].as_str().unwrap_or(""));
            println!(
                "signing secret (shown once): {}",
                w["signing_secret"].as_str().unwrap_or("")
            );
        }
        WebhookCommand::List { team } => {
            print_list(&api::list(&store, team.as_deref().unwrap_or(GLOBAL)).await?)
        }
        WebhookCommand::Delete { name } => {
            find(&store, &name).await?;
            wstore::delete(&store.db, &name).await?;
            println!("webhook {name} deleted");
        }
        WebhookCommand::Attempts { name, limit } => {
            find(&store, &name).await?;
            for a in wstore::attempts(&store.db, &name, 0, limit.clamp(1, 1000)).await? {
                println!(
                    "{}\t{}\t{}\tattempt={}\t{}\tstatus={}\t{}ms\t{}",
                    pressoir_core::clock::rfc3339_ms(a.created),
                    a.event,
                    a.delivery,
                    a.attempt,
                    if a.ok == 1 { "Sent" } else { "Failed" },
                    a.status_code
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "-".into()),
                    a.duration_ms,
                    a.error.unwrap_or_default(),
                );
            }
        }
        WebhookCommand::Enable {
            name,
            webhooks_allow_private,
        } => {
            let w = find(&store, &name).await?;
            let cfg = WebhookConfig {
                allow_private: webhooks_allow_private,
                ..WebhookConfig::default()
            };
            api::update(
                &store,
                &cfg,
                w,
                Change {
                    enabled: Some(true),
                    ..Change::default()
                },
            )
            .await?;
            println!("webhook {name} enabled");
        }
        WebhookCommand::Disable { name } => {
            let w = find(&store, &name).await?;
            api::update(
                &store,
                &WebhookConfig::default(),
                w,
                Change {
                    enabled: Some(false),
                    ..Change::default()
                },
            )
            .await?;
            println!("webhook {name} disabled");
        }
        WebhookCommand::Events => {
            for (e, d) in EVENTS {
                println!("{e}\t{d}");
            }
        }
    }
    Ok(())
}
